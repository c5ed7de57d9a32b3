//! A SPDY/3.1 server connection over an upgraded HTTP connection: a reader task that decodes
//! frames, answers every stream the client opens with a SYN_REPLY (as kubelet's server does
//! once it accepted the stream), echoes PINGs and passes stream events on; and a writer task
//! that owns the sending zlib context and writes frames in the order they were queued.
//! SETTINGS and WINDOW_UPDATE are read and ignored: Kubernetes' peers (spdystream) do no flow
//! control either.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{Decoder, Encoder, Frame, Headers, FLAG_FIN};

/// The largest data frame sent.
pub const CHUNK: usize = 32 * 1024;

/// What the client did.
#[derive(Debug)]
pub enum Incoming {
    /// A new stream (already replied to).
    Open {
        id: u32,
        headers: Headers,
    },
    Data {
        id: u32,
        data: Bytes,
    },
    /// The client's half of the stream is done.
    Fin {
        id: u32,
    },
    /// The client reset the stream.
    Reset {
        id: u32,
    },
    /// The client went away (GOAWAY, EOF, or a protocol error: said in the log).
    Gone,
}

/// The sending side: frames are written in the order queued. Cloned freely; the connection's
/// write half is shut once every clone is dropped.
#[derive(Clone)]
pub struct Writer(mpsc::Sender<Frame>);

impl Writer {
    async fn send(&self, f: Frame) -> bool {
        self.0.send(f).await.is_ok()
    }

    /// Sends `data` on stream `id` (in chunks); false once the connection is gone.
    pub async fn data(&self, id: u32, data: &[u8]) -> bool {
        for c in data.chunks(CHUNK) {
            let f = Frame::Data {
                id,
                flags: 0,
                data: Bytes::copy_from_slice(c),
            };
            if !self.send(f).await {
                return false;
            }
        }
        true
    }

    /// Ends the server's half of stream `id`.
    pub async fn fin(&self, id: u32) -> bool {
        self.send(Frame::Data {
            id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    pub async fn reset(&self, id: u32, status: u32) -> bool {
        self.send(Frame::RstStream { id, status }).await
    }

    /// Tells the client no more streams are taken.
    pub async fn go_away(&self, last_good: u32) -> bool {
        self.send(Frame::GoAway {
            last_good,
            status: 0,
        })
        .await
    }
}

/// Runs the connection: returns the client's events and the writer. The tasks end when the
/// client is gone and the writer's clones are dropped.
pub fn start<IO>(io: IO) -> (mpsc::Receiver<Incoming>, Writer)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (ftx, mut frx) = mpsc::channel::<Frame>(64);
    let (itx, irx) = mpsc::channel::<Incoming>(64);
    tokio::spawn(async move {
        let mut enc = Encoder::new();
        let mut buf = Vec::with_capacity(CHUNK + 64);
        while let Some(f) = frx.recv().await {
            buf.clear();
            let mut next = Some(f);
            // batch what is queued into one write
            while let Some(f) = next.take() {
                if let Err(e) = enc.encode(&f, &mut buf) {
                    tracing::debug!("CRI stream: {e}");
                }
                if buf.len() < 4 * CHUNK {
                    next = frx.try_recv().ok();
                }
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                // the client is gone: drain so that senders do not block
                while frx.recv().await.is_some() {}
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let writer = Writer(ftx);
    let w = writer.clone();
    tokio::spawn(async move {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let why = loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    let ev = match f {
                        Frame::SynStream {
                            id, flags, headers, ..
                        } => {
                            let reply = Frame::SynReply {
                                id,
                                flags: 0,
                                headers: vec![],
                            };
                            if !w.send(reply).await {
                                break "the connection closed".to_string();
                            }
                            let open = Incoming::Open { id, headers };
                            if flags & FLAG_FIN != 0 {
                                if itx.send(open).await.is_err() {
                                    return;
                                }
                                Some(Incoming::Fin { id })
                            } else {
                                Some(open)
                            }
                        }
                        Frame::Data { id, flags, data } => {
                            if !data.is_empty()
                                && itx.send(Incoming::Data { id, data }).await.is_err()
                            {
                                return;
                            }
                            (flags & FLAG_FIN != 0).then_some(Incoming::Fin { id })
                        }
                        Frame::Headers { id, flags, .. } => {
                            (flags & FLAG_FIN != 0).then_some(Incoming::Fin { id })
                        }
                        Frame::RstStream { id, .. } => Some(Incoming::Reset { id }),
                        Frame::Ping { id } => {
                            // the client's pings have odd ids; answer with the same frame
                            if id % 2 == 1 && !w.send(Frame::Ping { id }).await {
                                break "the connection closed".to_string();
                            }
                            None
                        }
                        Frame::GoAway { .. } => break "the client said GOAWAY".to_string(),
                        Frame::SynReply { .. }
                        | Frame::Settings { .. }
                        | Frame::WindowUpdate { .. }
                        | Frame::Unknown { .. } => None,
                    };
                    if let Some(ev) = ev {
                        if itx.send(ev).await.is_err() {
                            return;
                        }
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
        tracing::debug!("CRI SPDY connection ends: {why}");
        drop(w);
        let _ = itx.send(Incoming::Gone).await;
    });
    (irx, writer)
}

#[cfg(test)]
mod tests {
    use super::super::spdy::{header, Decoder, Encoder, Frame};
    use super::*;

    #[tokio::test]
    async fn replies_to_streams_echoes_pings_and_passes_data() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut events, writer) = start(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        for f in [
            Frame::SynStream {
                id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            },
            Frame::Ping { id: 1 },
            Frame::Data {
                id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"abc"),
            },
        ] {
            enc.encode(&f, &mut out).unwrap();
        }
        cwr.write_all(&out).await.unwrap();
        match events.recv().await.unwrap() {
            Incoming::Open { id: 1, headers } => {
                assert_eq!(header(&headers, "streamType"), Some("stdin"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            events.recv().await.unwrap(),
            Incoming::Data { id: 1, data } if &data[..] == b"abc"
        ));
        assert!(matches!(
            events.recv().await.unwrap(),
            Incoming::Fin { id: 1 }
        ));
        writer.data(1, b"out").await;
        writer.fin(1).await;
        drop(writer);
        // the client sees the reply, the pong, the data and the FIN
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 4 {
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
            if got.len() < 4 {
                assert!(crd.read_buf(&mut buf).await.unwrap() > 0);
            }
        }
        assert!(matches!(got[0], Frame::SynReply { id: 1, .. }));
        assert_eq!(got[1], Frame::Ping { id: 1 });
        assert!(matches!(&got[2], Frame::Data { id: 1, flags: 0, data } if &data[..] == b"out"));
        assert!(matches!(
            &got[3],
            Frame::Data {
                id: 1,
                flags: FLAG_FIN,
                ..
            }
        ));
        // the client leaves: Gone
        drop(cwr);
        drop(crd);
        assert!(matches!(events.recv().await.unwrap(), Incoming::Gone));
    }
}
