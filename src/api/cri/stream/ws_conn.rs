//! A WebSocket server connection carrying a channel protocol: a reader task that reassembles
//! messages, answers PINGs with PONGs (client-go pings every 5 s and gives up without an
//! answer), answers a CLOSE with a CLOSE, and passes (channel, data) on; and a writer task
//! that frames what is queued, in order.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::ws::{self, op, Assembler, Channels, Message};

/// What the client sent.
#[derive(Debug)]
pub enum Incoming {
    /// A message on a channel.
    Data { channel: u8, data: Bytes },
    /// The client closed, went away or broke the protocol (said in the log).
    Gone,
}

enum Out {
    Data(u8, Bytes),
    Control(u8, Bytes),
}

/// The sending side; the connection is closed (a CLOSE frame, then the write half shut) once
/// [`Writer::close`] was called or every clone is dropped.
#[derive(Clone)]
pub struct Writer(mpsc::Sender<Out>);

impl Writer {
    /// Sends `data` on `channel`; false once the connection is gone.
    pub async fn data(&self, channel: u8, data: &[u8]) -> bool {
        for c in data.chunks(32 * 1024) {
            if self
                .0
                .send(Out::Data(channel, Bytes::copy_from_slice(c)))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Sends a CLOSE with `code` (1000: normal).
    pub async fn close(&self, code: u16) {
        let _ = self
            .0
            .send(Out::Control(
                op::CLOSE,
                Bytes::copy_from_slice(&code.to_be_bytes()),
            ))
            .await;
    }
}

/// Runs the connection speaking `channels`.
pub fn start<IO>(io: IO, channels: Channels) -> (mpsc::Receiver<Incoming>, Writer)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (otx, mut orx) = mpsc::channel::<Out>(64);
    let (itx, irx) = mpsc::channel::<Incoming>(64);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut closed = false;
        while let Some(o) = orx.recv().await {
            if closed {
                continue;
            }
            buf.clear();
            match o {
                Out::Data(ch, d) => channels.encode(&mut buf, ch, &d),
                Out::Control(code, d) => {
                    closed = code == op::CLOSE;
                    ws::encode(&mut buf, true, code, &d, None);
                }
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                closed = true;
            }
            if closed {
                let _ = wr.shutdown().await;
            }
        }
        if !closed {
            buf.clear();
            ws::encode(&mut buf, true, op::CLOSE, &1000u16.to_be_bytes(), None);
            let _ = wr.write_all(&buf).await;
            let _ = wr.shutdown().await;
        }
    });
    let writer = Writer(otx);
    let w = writer.0.clone();
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut asm = Assembler::default();
        let why = 'conn: loop {
            match ws::decode(&mut buf) {
                Ok(Some(f)) => {
                    let m = match asm.push(f) {
                        Ok(Some(m)) => m,
                        Ok(None) => continue,
                        Err(e) => break e.to_string(),
                    };
                    match &m {
                        Message::Ping(p) => {
                            let _ = w.send(Out::Control(op::PONG, p.clone())).await;
                        }
                        Message::Pong(_) => {}
                        Message::Close(code) => {
                            let _ = w
                                .send(Out::Control(
                                    op::CLOSE,
                                    Bytes::copy_from_slice(&code.to_be_bytes()),
                                ))
                                .await;
                            break format!("the client closed ({code})");
                        }
                        Message::Text(_) | Message::Binary(_) => match channels.decode(&m) {
                            Ok(Some((channel, data))) => {
                                if itx.send(Incoming::Data { channel, data }).await.is_err() {
                                    break 'conn "the session ended".to_string();
                                }
                            }
                            Ok(None) => {}
                            Err(e) => break e.to_string(),
                        },
                    }
                }
                Ok(None) => tokio::select! {
                    r = rd.read_buf(&mut buf) => match r {
                        Ok(0) => break "EOF".to_string(),
                        Ok(_) => {}
                        Err(e) => break e.to_string(),
                    },
                    // the session let go of the connection
                    _ = itx.closed() => return,
                },
                Err(e) => break e.to_string(),
            }
        };
        tracing::debug!("CRI WebSocket connection ends: {why}");
        drop(w);
        let _ = itx.send(Incoming::Gone).await;
    });
    (irx, writer)
}

/// A byte stream carried in binary messages (`SPDY/3.1+portforward.k8s.io`: SPDY tunneled
/// through WebSocket, as client-go's port forwarding does over `-r websocket`): the returned
/// end reads what the client's messages carry and writes into binary messages.
pub fn tunnel<IO>(io: IO) -> tokio::io::DuplexStream
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mine, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(io);
    let (mut brd, mut bwr) = tokio::io::split(mine);
    let (ftx, mut frx) = mpsc::channel::<Vec<u8>>(64);
    // frames out, in order
    tokio::spawn(async move {
        while let Some(f) = frx.recv().await {
            if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    // the stream's bytes out as binary messages; its end as a CLOSE
    let out = ftx.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match brd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut f = Vec::with_capacity(n + 10);
                    ws::encode(&mut f, true, op::BINARY, &buf[..n], None);
                    if out.send(f).await.is_err() {
                        return;
                    }
                }
            }
        }
        let mut f = Vec::new();
        ws::encode(&mut f, true, op::CLOSE, &1000u16.to_be_bytes(), None);
        let _ = out.send(f).await;
    });
    // the client's messages into the stream
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut asm = Assembler::default();
        let why = loop {
            match ws::decode(&mut buf) {
                Ok(Some(f)) => match asm.push(f) {
                    Ok(Some(Message::Binary(b))) => {
                        if bwr.write_all(&b).await.is_err() {
                            break "the stream closed".to_string();
                        }
                    }
                    Ok(Some(Message::Ping(p))) => {
                        let mut f = Vec::new();
                        ws::encode(&mut f, true, op::PONG, &p, None);
                        let _ = ftx.send(f).await;
                    }
                    Ok(Some(Message::Close(code))) => break format!("the client closed ({code})"),
                    Ok(Some(Message::Text(_))) => break "a text message in a tunnel".to_string(),
                    Ok(Some(Message::Pong(_)) | None) => {}
                    Err(e) => break e.to_string(),
                },
                Ok(None) => match rd.read_buf(&mut buf).await {
                    Ok(0) => break "EOF".to_string(),
                    Ok(_) => {}
                    Err(e) => break e.to_string(),
                },
                Err(e) => break e.to_string(),
            }
        };
        tracing::debug!("CRI WebSocket tunnel ends: {why}");
        let _ = bwr.shutdown().await;
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pong_close_and_channels() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut events, writer) = start(server, Channels::V5);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut out = Vec::new();
        ws::encode(&mut out, true, op::PING, b"hb", Some([1, 2, 3, 4]));
        ws::encode(&mut out, true, op::BINARY, &[0, b'x'], Some([4, 3, 2, 1]));
        ws::encode(&mut out, true, op::BINARY, &[255, 0], Some([0, 0, 0, 0]));
        cwr.write_all(&out).await.unwrap();
        assert!(matches!(
            events.recv().await.unwrap(),
            Incoming::Data { channel: 0, data } if &data[..] == b"x"
        ));
        assert!(matches!(
            events.recv().await.unwrap(),
            Incoming::Data { channel: 255, data } if data[..] == [0]
        ));
        writer.data(1, b"out").await;
        writer.close(1000).await;
        drop(writer);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        loop {
            while let Some(f) = ws::decode(&mut buf).unwrap() {
                got.push(f);
            }
            if crd.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
        let ops: Vec<u8> = got.iter().map(|f| f.opcode).collect();
        assert_eq!(ops, [op::PONG, op::BINARY, op::CLOSE], "{got:?}");
        assert_eq!(&got[0].payload[..], b"hb");
        assert_eq!(&got[1].payload[..], b"\x01out");
        assert_eq!(&got[2].payload[..], 1000u16.to_be_bytes());
    }

    #[tokio::test]
    async fn tunnel_carries_bytes_both_ways() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut inner = tunnel(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut out = Vec::new();
        ws::encode(&mut out, false, op::BINARY, b"spd", Some([1, 2, 3, 4]));
        ws::encode(&mut out, true, op::CONTINUATION, b"y!", Some([4, 3, 2, 1]));
        cwr.write_all(&out).await.unwrap();
        let mut b = [0u8; 5];
        inner.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"spdy!");
        inner.write_all(b"back").await.unwrap();
        drop(inner);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 2 {
            while let Some(f) = ws::decode(&mut buf).unwrap() {
                got.push(f);
            }
            if got.len() < 2 {
                assert!(crd.read_buf(&mut buf).await.unwrap() > 0);
            }
        }
        assert_eq!(
            (got[0].opcode, &got[0].payload[..]),
            (op::BINARY, &b"back"[..])
        );
        assert_eq!(got[1].opcode, op::CLOSE);
    }
}
