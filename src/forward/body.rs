//! Streaming a body from one stream to another, re-framed on the way.
//!
//! Memory is bounded by the read buffer: bytes are written out as they arrive, never
//! collected; reading and writing are the byte mover's ([`crate::relay`]). Chunked input is
//! decoded and, where the receiver speaks HTTP/1.1, re-encoded with sluice's own framing;
//! trailers are dropped.

use std::io;
use std::time::Duration;

use super::chunked::{Chunk, ChunkError, ChunkedDecoder};
use super::framing::Framing;
use crate::relay::{Budget, write_all};
use crate::stream::ReadBuf;
use crate::transport::{ReadSide, WriteSide};

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

/// The streams a body moves between, how long each may stall, and the budget reads ask.
pub struct Pipe<'a, R, W, B> {
    pub from: &'a mut R,
    /// A bandwidth limit (a response's), or [`crate::relay::Unlimited`].
    pub budget: B,
    pub buf: &'a mut ReadBuf,
    pub to: &'a mut W,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// A head to send before the body. It leaves with the body bytes already buffered, so a
    /// small response is one write (one packet, one wakeup of the client), or on its own
    /// before the pipe waits for more.
    pub head: Vec<u8>,
    /// Bytes of `head` written to `to`.
    pub head_written: u64,
    /// Bytes of body written to `to`, framing included.
    pub written: u64,
}

impl<R: ReadSide, W: WriteSide, B: Budget> Pipe<'_, R, W, B> {
    /// Moves one body of `framing`, written out as `encoding`. Returns the body bytes moved.
    pub async fn copy(&mut self, framing: Framing, encoding: Encoding) -> Result<u64, BodyError> {
        let moved = match framing {
            Framing::Empty => 0,
            Framing::Length(length) => self.copy_length(length, encoding).await?,
            Framing::UntilClose => self.copy_until_close(encoding).await?,
            Framing::Chunked => self.copy_chunked(encoding).await?,
        };
        if encoding == Encoding::Chunked {
            self.write(&[b"0\r\n\r\n"]).await?;
        } else if !self.head.is_empty() {
            self.write(&[]).await?;
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
        if !self.head.is_empty() {
            self.write(&[]).await?;
        }
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let from = &mut *self.from;
        match self
            .buf
            .fill_within(from, &mut self.budget, max, self.read_timeout)
            .await
        {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(BodyError::ReadTimeout),
            Err(_) => Err(BodyError::Truncated),
        }
    }

    /// Writes the first `n` buffered bytes as body data, then consumes them.
    async fn write_data(&mut self, n: usize, encoding: Encoding) -> Result<(), BodyError> {
        let data = &self.buf.data()[..n];
        let head = self.head.len() as u64;
        let (result, len) = match encoding {
            Encoding::Identity => (
                write_parts(&mut *self.to, &mut self.head, &[data], self.write_timeout).await,
                n,
            ),
            Encoding::Chunked => {
                let size = format!("{n:x}\r\n");
                let parts = [size.as_bytes(), data, b"\r\n"];
                let len = size.len() + n + 2;
                let result =
                    write_parts(&mut *self.to, &mut self.head, &parts, self.write_timeout).await;
                (result, len)
            }
        };
        result.map_err(|_| BodyError::Write)?;
        self.head_written += head;
        self.written += len as u64;
        self.buf.consume(n);
        Ok(())
    }

    /// Writes the pending head, if any, and `parts`.
    async fn write(&mut self, parts: &[&[u8]]) -> Result<(), BodyError> {
        let head = self.head.len() as u64;
        write_parts(&mut *self.to, &mut self.head, parts, self.write_timeout)
            .await
            .map_err(|_| BodyError::Write)?;
        self.head_written += head;
        self.written += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        Ok(())
    }
}

/// Writes `head` (leaving it empty) and then `parts`, in one write unless there is only one
/// piece: a socket write per piece would be a packet per piece.
async fn write_parts<W: WriteSide>(
    to: &mut W,
    head: &mut Vec<u8>,
    parts: &[&[u8]],
    timeout: Duration,
) -> io::Result<()> {
    if let ([], [only]) = (head.as_slice(), parts) {
        return write_all(to, only, timeout).await;
    }
    let mut out = std::mem::take(head);
    for part in parts {
        out.extend_from_slice(part);
    }
    write_all(to, &out, timeout).await
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
