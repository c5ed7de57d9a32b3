//! WebSocket (RFC 6455), the server's side of what Kubernetes' channel protocols need: the
//! handshake's accept key, frames (masked from the client, unmasked from the server; 7-, 16-
//! and 64-bit lengths), messages reassembled from fragments with control frames in between,
//! and the channel framing of `channel.k8s.io` and its versions: each binary message starts
//! with its channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5 adds 255, "close
//! the channel named by the next byte"), or, in `base64.channel.k8s.io`, each text message
//! starts with the channel as an ASCII digit and carries base64.

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::Digest;

/// The GUID the handshake appends to the client's key (RFC 6455, section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest message accepted from a client (stdin chunks and resize messages are small).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Opcodes.
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

/// The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Bytes,
}

/// A malformed frame: the connection is closed.
#[derive(Debug, Clone, PartialEq)]
pub struct WsError(pub String);

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebSocket protocol error: {}", self.0)
    }
}

impl std::error::Error for WsError {}

/// Appends a frame; `mask` is for a client (the server sends unmasked frames).
pub fn encode(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.put_u8(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.put_u8(m | n as u8),
        n if n <= 0xffff => {
            out.put_u8(m | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(m | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// Takes one whole frame off the front of `buf` (unmasked); None while it holds less.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError(
            "reserved bits set (no extension was negotiated)".into(),
        ));
    }
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (len, at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(WsError(format!("a frame of {len} bytes is over the limit")));
    }
    if opcode >= 0x8 && (len > 125 || b0 & 0x80 == 0) {
        return Err(WsError(
            "a control frame over 125 bytes or fragmented".into(),
        ));
    }
    let total = at + if masked { 4 } else { 0 } + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(at);
    let key = masked.then(|| {
        let k = [buf[0], buf[1], buf[2], buf[3]];
        buf.advance(4);
        k
    });
    let mut payload = buf.split_to(len as usize);
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        opcode,
        payload: payload.freeze(),
    }))
}

/// A whole message, or a control frame, as [`Assembler::push`] gives them.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close code (1005 when it gave none).
    Close(u16),
}

/// Reassembles fragmented messages; control frames pass through between fragments.
#[derive(Default)]
pub struct Assembler {
    opcode: Option<u8>,
    parts: BytesMut,
}

impl Assembler {
    pub fn push(&mut self, f: Frame) -> Result<Option<Message>, WsError> {
        match f.opcode {
            op::PING => return Ok(Some(Message::Ping(f.payload))),
            op::PONG => return Ok(Some(Message::Pong(f.payload))),
            op::CLOSE => {
                let code = if f.payload.len() >= 2 {
                    u16::from_be_bytes([f.payload[0], f.payload[1]])
                } else {
                    1005
                };
                return Ok(Some(Message::Close(code)));
            }
            op::TEXT | op::BINARY => {
                if self.opcode.is_some() {
                    return Err(WsError("a new message inside a fragmented one".into()));
                }
                if f.fin {
                    return Ok(Some(whole(f.opcode, f.payload)));
                }
                self.opcode = Some(f.opcode);
                self.parts.extend_from_slice(&f.payload);
            }
            op::CONTINUATION => {
                let Some(o) = self.opcode else {
                    return Err(WsError("a continuation frame with no message".into()));
                };
                if self.parts.len() + f.payload.len() > MAX_MESSAGE {
                    return Err(WsError("a message over the limit".into()));
                }
                self.parts.extend_from_slice(&f.payload);
                if f.fin {
                    self.opcode = None;
                    return Ok(Some(whole(o, self.parts.split().freeze())));
                }
            }
            other => return Err(WsError(format!("unknown opcode {other:#x}"))),
        }
        Ok(None)
    }
}

fn whole(opcode: u8, b: Bytes) -> Message {
    if opcode == op::TEXT {
        Message::Text(b)
    } else {
        Message::Binary(b)
    }
}

/// The channel protocols a remote command speaks over WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// `channel.k8s.io`: binary, errors as plain text.
    V1,
    /// `base64.channel.k8s.io`: text, base64, errors as plain text.
    Base64,
    /// `v4.channel.k8s.io`: binary, exit status as a JSON metav1.Status.
    V4,
    /// `v4.base64.channel.k8s.io`.
    V4Base64,
    /// `v5.channel.k8s.io`: v4 and the close signal (channel 255).
    V5,
}

impl Channels {
    /// Every protocol served, newest first.
    pub const ALL: [Channels; 5] = [
        Channels::V5,
        Channels::V4,
        Channels::V4Base64,
        Channels::Base64,
        Channels::V1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Channels::V1 => "channel.k8s.io",
            Channels::Base64 => "base64.channel.k8s.io",
            Channels::V4 => "v4.channel.k8s.io",
            Channels::V4Base64 => "v4.base64.channel.k8s.io",
            Channels::V5 => "v5.channel.k8s.io",
        }
    }

    /// The first of the client's offered protocols (`Sec-WebSocket-Protocol`) served here.
    pub fn negotiate(offered: &str) -> Option<Channels> {
        offered
            .split(',')
            .map(str::trim)
            .find_map(|o| Channels::ALL.into_iter().find(|c| c.name() == o))
    }

    fn base64(self) -> bool {
        matches!(self, Channels::Base64 | Channels::V4Base64)
    }

    /// Whether the exit status goes out as a JSON metav1.Status (else as plain text).
    pub fn status_json(self) -> bool {
        matches!(self, Channels::V4 | Channels::V4Base64 | Channels::V5)
    }

    /// A server message on `channel` as a frame.
    pub fn encode(self, out: &mut Vec<u8>, channel: u8, data: &[u8]) {
        if self.base64() {
            let mut p = vec![b'0' + channel];
            p.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            encode(out, true, op::TEXT, &p, None);
        } else {
            let mut p = Vec::with_capacity(1 + data.len());
            p.push(channel);
            p.extend_from_slice(data);
            encode(out, true, op::BINARY, &p, None);
        }
    }

    /// A client message as (channel, data); None for one without a channel (ignored).
    pub fn decode(self, m: &Message) -> Result<Option<(u8, Bytes)>, WsError> {
        let b = match m {
            Message::Binary(b) if !self.base64() => b,
            Message::Text(b) if self.base64() => b,
            Message::Binary(_) | Message::Text(_) => {
                return Err(WsError(format!(
                    "a {} message on {}",
                    if matches!(m, Message::Text(_)) {
                        "text"
                    } else {
                        "binary"
                    },
                    self.name()
                )))
            }
            _ => return Ok(None),
        };
        if b.is_empty() {
            return Ok(None);
        }
        if !self.base64() {
            return Ok(Some((b[0], b.slice(1..))));
        }
        let ch = b[0].wrapping_sub(b'0');
        let data = base64::engine::general_purpose::STANDARD
            .decode(&b[1..])
            .map_err(|e| WsError(format!("bad base64 on channel {ch}: {e}")))?;
        Ok(Some((ch, Bytes::from(data))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frames_of_the_rfc() {
        // RFC 6455 5.7: a masked "Hello" from a client
        let mut b = BytesMut::from(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ][..],
        );
        assert_eq!(
            decode(&mut b).unwrap().unwrap(),
            Frame {
                fin: true,
                opcode: op::TEXT,
                payload: Bytes::from_static(b"Hello"),
            }
        );
        assert!(b.is_empty());
        // ...and the unmasked one a server sends
        let mut out = Vec::new();
        encode(&mut out, true, op::TEXT, b"Hello", None);
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        // encoding with the RFC's key gives the RFC's masked bytes
        let mut out = Vec::new();
        encode(
            &mut out,
            true,
            op::TEXT,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn lengths_16_and_64_bit_and_partial_input() {
        for n in [125usize, 126, 65535, 65536, 200_000] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode(&mut out, true, op::BINARY, &data, Some([1, 2, 3, 4]));
            let head = match n {
                n if n < 126 => 2,
                n if n <= 0xffff => 4,
                _ => 10,
            };
            assert_eq!(out.len(), head + 4 + n, "{n}");
            // nothing until the whole frame is there
            let mut b = BytesMut::from(&out[..out.len() - 1]);
            assert_eq!(decode(&mut b).unwrap(), None);
            b.put_u8(*out.last().unwrap());
            let f = decode(&mut b).unwrap().unwrap();
            assert_eq!(f.payload.as_ref(), &data[..], "{n}");
        }
    }

    #[test]
    fn fragments_reassemble_around_a_ping() {
        // RFC 6455 5.6: "Hel" + "lo" in two frames, with a ping between them
        let mut wire = Vec::new();
        encode(
            &mut wire,
            false,
            op::BINARY,
            &[1, b'H', b'e', b'l'],
            Some([9, 8, 7, 6]),
        );
        encode(&mut wire, true, op::PING, b"p", Some([1, 1, 1, 1]));
        encode(&mut wire, true, op::CONTINUATION, b"lo", Some([5, 5, 5, 5]));
        encode(
            &mut wire,
            true,
            op::CLOSE,
            &1000u16.to_be_bytes(),
            Some([0, 0, 0, 0]),
        );
        let mut b = BytesMut::from(&wire[..]);
        let mut a = Assembler::default();
        let mut got = Vec::new();
        while let Some(f) = decode(&mut b).unwrap() {
            if let Some(m) = a.push(f).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(
            got,
            vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Binary(Bytes::from_static(b"\x01Hello")),
                Message::Close(1000),
            ]
        );
        // a continuation with nothing to continue is an error
        let mut a = Assembler::default();
        assert!(a
            .push(Frame {
                fin: true,
                opcode: op::CONTINUATION,
                payload: Bytes::new()
            })
            .is_err());
    }

    #[test]
    fn refuses_bad_frames() {
        // reserved bit
        assert!(decode(&mut BytesMut::from(&[0xc1, 0x00][..])).is_err());
        // fragmented control frame
        assert!(decode(&mut BytesMut::from(&[0x09, 0x00][..])).is_err());
        // huge length
        let mut b = BytesMut::from(&[0x82, 0x7f][..]);
        b.put_u64(1 << 40);
        assert!(decode(&mut b).is_err());
    }

    #[test]
    fn channel_protocols() {
        assert_eq!(
            Channels::negotiate("v5.channel.k8s.io, v4.channel.k8s.io"),
            Some(Channels::V5)
        );
        assert_eq!(
            Channels::negotiate("foo, base64.channel.k8s.io"),
            Some(Channels::Base64)
        );
        assert_eq!(Channels::negotiate("v9.channel.k8s.io"), None);

        let mut out = Vec::new();
        Channels::V5.encode(&mut out, 1, b"hi");
        assert_eq!(out, [0x82, 3, 1, b'h', b'i']);
        let m = Message::Binary(Bytes::from_static(&[255, 0]));
        assert_eq!(
            Channels::V5.decode(&m).unwrap(),
            Some((255, Bytes::from_static(&[0])))
        );

        let mut out = Vec::new();
        Channels::Base64.encode(&mut out, 2, b"hi");
        assert_eq!(&out[2..], b"2aGk=");
        let m = Message::Text(Bytes::from_static(b"0aGk="));
        assert_eq!(
            Channels::Base64.decode(&m).unwrap(),
            Some((0, Bytes::from_static(b"hi")))
        );
        assert!(Channels::V4.decode(&m).is_err());
    }
}
