//! SPDY/3.1 framing, the subset Kubernetes' streaming protocols use (remotecommand's exec and
//! attach, and port forwarding): control frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS,
//! PING, GOAWAY, HEADERS and WINDOW_UPDATE, and data frames. Header blocks are compressed with
//! zlib primed with SPDY/3's header dictionary, one compression context per direction for the
//! whole connection, each block ended by a sync flush (as Go's spdy framer, which kubelet and
//! client-go use through spdystream, does). No maintained Rust crate speaks SPDY, hence this.
//!
//! The codec is pure: [`Encoder::encode`] appends a frame's bytes, [`Decoder::decode`] takes one
//! whole frame off the front of a buffer. The connection that drives it is [`super::spdy_conn`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The SPDY version spoken.
pub const VERSION: u16 = 3;
/// The `Upgrade` token of the HTTP upgrade.
pub const UPGRADE: &str = "SPDY/3.1";
/// The FIN flag (data and control frames alike): the sender's half of the stream is done.
pub const FLAG_FIN: u8 = 0x01;
/// The largest payload of one frame (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The largest decompressed header block accepted (a bomb is refused, not inflated).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Control frame types.
pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes used here.
pub mod rst {
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
}

/// Header name/value pairs; names are lower case on the wire, several values of one name are
/// joined by NUL.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive), if present.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    /// SETTINGS: (flags, id, value) entries. Kubernetes' peers send none; kept for completeness.
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this subset does not know (ignored, as the spec asks).
    Unknown {
        kind: u16,
    },
}

/// A malformed frame or header block: the connection cannot go on.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SPDY protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn bad(what: impl Into<String>) -> ProtocolError {
    ProtocolError(what.into())
}

/// SPDY/3's zlib dictionary for header blocks (section 2.6.10.1 of the draft).
pub const DICTIONARY: &[u8] =
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\
\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\
\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-contr\
ol\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\
\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\
\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\
\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\
\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\
\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\
\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pra\
gma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05rang\
e\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\
\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\
\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10\
www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\
\x06200\x20OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\
\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120\
1202205206300302303304305306307402405406407408409410411412413414415416417502504505203\x20Non\
-Authoritative\x20Information204\x20No\x20Content301\x20Moved\x20Permanently400\x20Bad\x20Re\
quest401\x20Unauthorized403\x20Forbidden404\x20Not\x20Found500\x20Internal\x20Server\x20Erro\
r501\x20Not\x20Implemented503\x20Service\x20UnavailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Ju\
n\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20\
Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,a\
pplication/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharse\
t=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The sending half of a connection's codec: its zlib context lives as long as the connection.
pub struct Encoder {
    compress: Compress,
}

/// The receiving half of a connection's codec, with the peer's zlib context.
pub struct Decoder {
    decompress: Decompress,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new()
    }
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut compress = Compress::new(Compression::best(), true);
        compress
            .set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream takes a dictionary");
        Encoder { compress }
    }

    /// Appends the bytes of `f` to `out`.
    pub fn encode(&mut self, f: &Frame, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match f {
            Frame::Data { id, flags, data } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(bad("data frame over 16 MiB"));
                }
                out.put_u32(id & 0x7fff_ffff);
                out.put_u32(((*flags as u32) << 24) | data.len() as u32);
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                id,
                associated,
                priority,
                flags,
                headers,
            } => {
                let block = self.compress_headers(headers)?;
                let mut p = Vec::with_capacity(10 + block.len());
                p.put_u32(id & 0x7fff_ffff);
                p.put_u32(associated & 0x7fff_ffff);
                p.put_u8((priority & 0x7) << 5);
                p.put_u8(0); // slot
                p.extend_from_slice(&block);
                control(out, kind::SYN_STREAM, *flags, &p)?;
            }
            Frame::SynReply { id, flags, headers } | Frame::Headers { id, flags, headers } => {
                let block = self.compress_headers(headers)?;
                let mut p = Vec::with_capacity(4 + block.len());
                p.put_u32(id & 0x7fff_ffff);
                p.extend_from_slice(&block);
                let k = if matches!(f, Frame::SynReply { .. }) {
                    kind::SYN_REPLY
                } else {
                    kind::HEADERS
                };
                control(out, k, *flags, &p)?;
            }
            Frame::RstStream { id, status } => {
                let mut p = Vec::with_capacity(8);
                p.put_u32(id & 0x7fff_ffff);
                p.put_u32(*status);
                control(out, kind::RST_STREAM, 0, &p)?;
            }
            Frame::Settings { entries } => {
                let mut p = Vec::with_capacity(4 + 8 * entries.len());
                p.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    p.put_u32(((*flags as u32) << 24) | (id & 0xff_ffff));
                    p.put_u32(*value);
                }
                control(out, kind::SETTINGS, 0, &p)?;
            }
            Frame::Ping { id } => control(out, kind::PING, 0, &id.to_be_bytes())?,
            Frame::GoAway { last_good, status } => {
                let mut p = Vec::with_capacity(8);
                p.put_u32(last_good & 0x7fff_ffff);
                p.put_u32(*status);
                control(out, kind::GOAWAY, 0, &p)?;
            }
            Frame::WindowUpdate { id, delta } => {
                let mut p = Vec::with_capacity(8);
                p.put_u32(id & 0x7fff_ffff);
                p.put_u32(delta & 0x7fff_ffff);
                control(out, kind::WINDOW_UPDATE, 0, &p)?;
            }
            Frame::Unknown { kind } => return Err(bad(format!("cannot encode frame type {kind}"))),
        }
        Ok(())
    }

    fn compress_headers(&mut self, h: &Headers) -> Result<Vec<u8>, ProtocolError> {
        let mut raw = Vec::new();
        raw.put_u32(h.len() as u32);
        for (k, v) in h {
            raw.put_u32(k.len() as u32);
            raw.extend(k.bytes().map(|b| b.to_ascii_lowercase()));
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        let c = &mut self.compress;
        let start = c.total_in();
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            let done = (c.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(raw.len() + 64);
            }
            c.compress_vec(&raw[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| bad(format!("compressing a header block: {e}")))?;
            // a sync flush is complete when it left room in the output
            if (c.total_in() - start) as usize == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            decompress: Decompress::new(true),
        }
    }

    /// Takes one whole frame off the front of `buf`; None while `buf` holds less than one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let mut head = buf.split_to(8);
        let mut p = buf.split_to(len).freeze();
        let first = head.get_u32();
        let flags = head.get_u8();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: first & 0x7fff_ffff,
                flags,
                data: p,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(bad(format!("version {version} (only SPDY/3 is spoken)")));
        }
        let k = (first & 0xffff) as u16;
        let need = |n: usize, p: &Bytes| -> Result<(), ProtocolError> {
            if p.len() < n {
                Err(bad(format!(
                    "control frame {k} of {} bytes is too short",
                    p.len()
                )))
            } else {
                Ok(())
            }
        };
        Ok(Some(match k {
            kind::SYN_STREAM => {
                need(10, &p)?;
                let id = p.get_u32() & 0x7fff_ffff;
                let associated = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let _slot = p.get_u8();
                let headers = self.decompress_headers(&p)?;
                Frame::SynStream {
                    id,
                    associated,
                    priority,
                    flags,
                    headers,
                }
            }
            kind::SYN_REPLY | kind::HEADERS => {
                need(4, &p)?;
                let id = p.get_u32() & 0x7fff_ffff;
                let headers = self.decompress_headers(&p)?;
                if k == kind::SYN_REPLY {
                    Frame::SynReply { id, flags, headers }
                } else {
                    Frame::Headers { id, flags, headers }
                }
            }
            kind::RST_STREAM => {
                need(8, &p)?;
                Frame::RstStream {
                    id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            kind::SETTINGS => {
                need(4, &p)?;
                let n = p.get_u32() as usize;
                if p.len() != n.saturating_mul(8) {
                    return Err(bad(format!(
                        "SETTINGS says {n} entries in {} bytes",
                        p.len()
                    )));
                }
                let entries = (0..n)
                    .map(|_| {
                        let a = p.get_u32();
                        ((a >> 24) as u8, a & 0xff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { entries }
            }
            kind::PING => {
                need(4, &p)?;
                Frame::Ping { id: p.get_u32() }
            }
            kind::GOAWAY => {
                need(4, &p)?;
                let last_good = p.get_u32() & 0x7fff_ffff;
                // SPDY/2 GOAWAY frames had no status
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            kind::WINDOW_UPDATE => {
                need(8, &p)?;
                Frame::WindowUpdate {
                    id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        }))
    }

    fn decompress_headers(&mut self, block: &[u8]) -> Result<Headers, ProtocolError> {
        let d = &mut self.decompress;
        let start = d.total_in();
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            let done = (d.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                if out.len() > MAX_HEADER_BLOCK {
                    return Err(bad("header block over 1 MiB"));
                }
                out.reserve(out.len() + 256);
            }
            let before = (d.total_in(), d.total_out());
            match d.decompress_vec(&block[done..], &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    d.set_dictionary(DICTIONARY)
                        .map_err(|e| bad(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(bad(format!("header block: {e}"))),
            }
            let all_in = (d.total_in() - start) as usize == block.len();
            let progress = (d.total_in(), d.total_out()) != before;
            if (all_in && out.len() < out.capacity()) || !progress {
                break;
            }
        }
        parse_block(&out)
    }
}

fn control(out: &mut Vec<u8>, k: u16, flags: u8, payload: &[u8]) -> Result<(), ProtocolError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(bad("control frame over 16 MiB"));
    }
    out.put_u32(0x8000_0000 | ((VERSION as u32) << 16) | k as u32);
    out.put_u32(((flags as u32) << 24) | payload.len() as u32);
    out.extend_from_slice(payload);
    Ok(())
}

fn parse_block(mut b: &[u8]) -> Result<Headers, ProtocolError> {
    fn take<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], ProtocolError> {
        if b.len() < 4 {
            return Err(bad("truncated header block"));
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(bad("truncated header block"));
        }
        let (s, rest) = b.split_at(n);
        *b = rest;
        Ok(s)
    }
    if b.len() < 4 {
        return Err(bad("empty header block"));
    }
    let n = b.get_u32() as usize;
    let mut h = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        if k.is_empty() {
            return Err(bad("empty header name"));
        }
        h.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // Frames as Go's spdy framer (github.com/moby/spdystream/spdy, used by client-go and
    // kubelet) writes them, one framer in sequence: the second SYN_STREAM's header block
    // continues the first one's zlib stream.
    const GO_SYN1: &str = "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff";
    const GO_SYN3: &str = "800300010100001900000003000000000000c22ac5565c92925f5a02000000ffff";
    const GO_REPLY3: &str = "800300020000000e000000036260606000000000ffff";

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_go_framer_bytes() {
        let mut c = Decoder::new();
        let mut b = BytesMut::new();
        for s in [GO_SYN1, GO_SYN3, GO_REPLY3] {
            b.extend_from_slice(&unhex(s));
        }
        assert_eq!(
            c.decode(&mut b).unwrap().unwrap(),
            Frame::SynStream {
                id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            }
        );
        assert_eq!(
            c.decode(&mut b).unwrap().unwrap(),
            Frame::SynStream {
                id: 3,
                associated: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "stdout")]),
            }
        );
        assert_eq!(
            c.decode(&mut b).unwrap().unwrap(),
            Frame::SynReply {
                id: 3,
                flags: 0,
                headers: vec![],
            }
        );
        assert!(b.is_empty());
        assert_eq!(c.decode(&mut b).unwrap(), None);
    }

    #[test]
    fn simple_frames_match_go_bytes() {
        let cases = [
            (
                Frame::Data {
                    id: 5,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"hi"),
                },
                "00000005010000026869",
            ),
            (
                Frame::RstStream {
                    id: 7,
                    status: 5, // CANCEL
                },
                "80030003000000080000000700000005",
            ),
            (Frame::Ping { id: 9 }, "800300060000000400000009"),
            (
                Frame::GoAway {
                    last_good: 11,
                    status: 0,
                },
                "80030007000000080000000b00000000",
            ),
            (
                Frame::WindowUpdate {
                    id: 1,
                    delta: 65536,
                },
                "80030009000000080000000100010000",
            ),
        ];
        let (mut tx, mut rx) = (Encoder::new(), Decoder::new());
        for (f, go) in cases {
            let mut out = Vec::new();
            tx.encode(&f, &mut out).unwrap();
            assert_eq!(hex::encode(&out), go, "{f:?}");
            let mut b = BytesMut::from(&out[..]);
            assert_eq!(rx.decode(&mut b).unwrap().unwrap(), f);
        }
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream() {
        let (mut tx, mut rx) = (Encoder::new(), Decoder::new());
        let frames = vec![
            Frame::SynStream {
                id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::Headers {
                id: 1,
                flags: FLAG_FIN,
                headers: h(&[("x-many", "a\0b")]),
            },
            Frame::SynStream {
                id: 3,
                associated: 1,
                priority: 7,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::Settings {
                entries: vec![(0, 7, 65536)],
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            tx.encode(f, &mut wire).unwrap();
        }
        // the zlib stream starts with the header that names SPDY's dictionary, as Go's does
        assert_eq!(&wire[18..24], &unhex("78f9e3c6a7c2")[..]);
        // fed a byte at a time, the decoder waits for whole frames
        let mut b = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            b.put_u8(byte);
            while let Some(f) = rx.decode(&mut b).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn header_names_go_out_lower_case() {
        let mut tx = Encoder::new();
        let mut wire = Vec::new();
        tx.encode(
            &Frame::SynReply {
                id: 2,
                flags: 0,
                headers: h(&[("X-Stream-Protocol-Version", "v4.channel.k8s.io")]),
            },
            &mut wire,
        )
        .unwrap();
        let mut fresh = Decoder::new();
        let mut b = BytesMut::from(&wire[..]);
        assert_eq!(
            fresh.decode(&mut b).unwrap().unwrap(),
            Frame::SynReply {
                id: 2,
                flags: 0,
                headers: h(&[("x-stream-protocol-version", "v4.channel.k8s.io")]),
            }
        );
    }

    #[test]
    fn refuses_bad_frames() {
        let mut c = Decoder::new();
        // SPDY/2
        let mut b = BytesMut::from(&unhex("800200060000000400000009")[..]);
        assert!(c.decode(&mut b).is_err());
        // a RST_STREAM too short
        let mut b = BytesMut::from(&unhex("800300030000000400000007")[..]);
        assert!(c.decode(&mut b).is_err());
        // a header block that is not zlib
        let mut c = Decoder::new();
        let mut b =
            BytesMut::from(&unhex("8003000100000010000000010000000000000102030405060708")[..]);
        assert!(c.decode(&mut b).is_err());
        // an unknown control type is passed on, not fatal
        let mut b = BytesMut::from(&unhex("8003000a00000000")[..]);
        assert_eq!(
            Decoder::new().decode(&mut b).unwrap(),
            Some(Frame::Unknown { kind: 10 })
        );
    }
}
