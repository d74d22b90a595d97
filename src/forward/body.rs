//! Streaming a body from one socket to another, re-framed on the way.
//!
//! Memory is bounded by the read buffer: bytes are written out as they arrive, never
//! collected. Chunked input is decoded and, where the receiver speaks HTTP/1.1, re-encoded
//! with sluice's own framing; trailers are dropped.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use super::chunked::{Chunk, ChunkError, ChunkedDecoder};
use super::framing::Framing;
use crate::stream::{ReadBuf, write_all};

/// How the body is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes as they are: the receiver knows the length, or reads until close.
    Identity,
    /// Re-chunked, ending with a last chunk and no trailers.
    Chunked,
}

/// Why a body stopped short.
#[derive(Debug)]
pub enum BodyError {
    /// The sender closed or failed before the body was complete.
    Truncated,
    /// The sender's framing is malformed.
    Malformed(ChunkError),
    /// The sender was silent for longer than the read timeout.
    ReadTimeout,
    /// The receiver failed or stopped taking bytes.
    Write,
}

/// The sockets a body moves between, and how long each may stall.
pub struct Pipe<'a> {
    pub from: &'a TcpStream,
    pub buf: &'a mut ReadBuf,
    pub to: &'a TcpStream,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Bytes written to `to` so far, framing included.
    pub written: u64,
}

impl Pipe<'_> {
    /// Moves one body of `framing`, written out as `encoding`. Returns the body bytes moved.
    pub async fn copy(&mut self, framing: Framing, encoding: Encoding) -> Result<u64, BodyError> {
        let moved = match framing {
            Framing::Empty => return Ok(0),
            Framing::Length(length) => self.copy_length(length, encoding).await?,
            Framing::UntilClose => self.copy_until_close(encoding).await?,
            Framing::Chunked => self.copy_chunked(encoding).await?,
        };
        if encoding == Encoding::Chunked {
            self.write(b"0\r\n\r\n").await?;
        }
        Ok(moved)
    }

    async fn copy_length(&mut self, length: u64, encoding: Encoding) -> Result<u64, BodyError> {
        let mut left = length;
        while left > 0 {
            if self.buf.is_empty() && self.fill(left).await? == 0 {
                return Err(BodyError::Truncated);
            }
            let n = left.min(self.buf.len() as u64) as usize;
            self.write_data(n, encoding).await?;
            left -= n as u64;
        }
        Ok(length)
    }

    async fn copy_until_close(&mut self, encoding: Encoding) -> Result<u64, BodyError> {
        let mut moved = 0;
        loop {
            if self.buf.is_empty() && self.fill(u64::MAX).await? == 0 {
                return Ok(moved);
            }
            let n = self.buf.len();
            self.write_data(n, encoding).await?;
            moved += n as u64;
        }
    }

    async fn copy_chunked(&mut self, encoding: Encoding) -> Result<u64, BodyError> {
        let mut decoder = ChunkedDecoder::default();
        let mut moved = 0;
        loop {
            match decoder
                .next(self.buf.data())
                .map_err(BodyError::Malformed)?
            {
                Chunk::Data(n) => {
                    self.write_data(n, encoding).await?;
                    moved += n as u64;
                }
                Chunk::Framing(n) => self.buf.consume(n),
                Chunk::NeedMore => {
                    if self.fill(u64::MAX).await? == 0 {
                        return Err(BodyError::Truncated);
                    }
                }
                Chunk::Done(n) => {
                    self.buf.consume(n);
                    return Ok(moved);
                }
            }
        }
    }

    async fn fill(&mut self, max: u64) -> Result<usize, BodyError> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        match self.buf.fill(self.from, max, self.read_timeout).await {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(BodyError::ReadTimeout),
            Err(_) => Err(BodyError::Truncated),
        }
    }

    /// Writes the first `n` buffered bytes as body data, then consumes them.
    async fn write_data(&mut self, n: usize, encoding: Encoding) -> Result<(), BodyError> {
        let data = &self.buf.data()[..n];
        let (result, len) = match encoding {
            Encoding::Identity => (write_all(self.to, data, self.write_timeout).await, n),
            Encoding::Chunked => {
                let mut framed = Vec::with_capacity(n + 20);
                framed.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                framed.extend_from_slice(data);
                framed.extend_from_slice(b"\r\n");
                let len = framed.len();
                (write_all(self.to, &framed, self.write_timeout).await, len)
            }
        };
        result.map_err(|_| BodyError::Write)?;
        self.written += len as u64;
        self.buf.consume(n);
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        write_all(self.to, bytes, self.write_timeout)
            .await
            .map_err(|_| BodyError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Checks the chunked framing of body bytes that are already buffered, before anything is sent
/// upstream: a request whose visible framing is already broken never reaches the origin.
pub fn precheck_chunked(buffered: &[u8]) -> Result<(), ChunkError> {
    let mut decoder = ChunkedDecoder::default();
    let mut pos = 0;
    loop {
        match decoder.next(&buffered[pos..])? {
            Chunk::Data(n) | Chunk::Framing(n) => pos += n,
            Chunk::NeedMore | Chunk::Done(_) => return Ok(()),
        }
    }
}
