//! Blocking readers and writers over channels of byte chunks: the seam between a blocking tar
//! reader or writer (on a blocking thread) and an async stream of messages (gRPC, HTTP), used by
//! `nook cp`, the Docker door's archive and image endpoints.

use std::io::{Read, Write};

/// Reads the chunks another thread sends, as one byte stream (its end: the sender dropped).
pub struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Sends what is written, in chunks of at least `chunk` bytes (the last one smaller, at
/// `flush`), each wrapped as the channel's message. Blocking: for a blocking thread.
pub struct ChannelWriter<T> {
    tx: tokio::sync::mpsc::Sender<T>,
    buf: Vec<u8>,
    chunk: usize,
    wrap: fn(Vec<u8>) -> T,
}

impl<T> ChannelWriter<T> {
    pub fn new(tx: tokio::sync::mpsc::Sender<T>, chunk: usize, wrap: fn(Vec<u8>) -> T) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::new(),
            chunk,
            wrap,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        self.tx.blocking_send((self.wrap)(data)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl<T> Write for ChannelWriter<T> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= self.chunk {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_in_order() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let (stx, srx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = ChannelWriter::new(tx, 4096, |v| v);
            for part in data.chunks(1000) {
                w.write_all(part).unwrap();
            }
            w.flush().unwrap();
        });
        let mut rx = rx;
        let pump = std::thread::spawn(move || {
            while let Some(c) = rx.blocking_recv() {
                assert!(!c.is_empty());
                stx.send(c).unwrap();
            }
        });
        let mut got = Vec::new();
        ChannelReader::new(srx).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        pump.join().unwrap();
        assert_eq!(got, expect);
    }
}
