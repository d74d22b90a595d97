//! A stream with a read buffer, for the HTTP side of sluice.
//!
//! Heads are read into the buffer and parsed in place; what follows a head (a body, the next
//! pipelined request, the first tunnel bytes) stays buffered for whoever reads next. Reads
//! take any [`ReadSide`], so one task can stream a request body up from one half of a client
//! stream while it relays the response down into the other.

use std::future::poll_fn;
use std::io;
use std::task::{Poll, ready};
use std::time::Duration;

use tokio::time::Instant;

use crate::deadline;
use crate::relay::{self, Budget, Unlimited};
use crate::transport::ReadSide;

/// Bytes read from a socket and not yet consumed.
#[derive(Debug, Default)]
pub struct ReadBuf {
    /// Storage, all of it initialised: zeroed once when it grows, not on every read.
    bytes: Vec<u8>,
    /// `bytes[start..end]` is unconsumed.
    start: usize,
    end: usize,
    /// Bytes consumed over the buffer's life, for the access log's byte counts.
    consumed: u64,
    /// The last read filled all the room it had: bytes are flowing, so the next may grow it.
    filled: bool,
}

/// How much one read asks the kernel for, at most.
const READ_CHUNK: usize = 16 * 1024;
/// The storage a connection gets when its first bytes arrive (nginx's first buffer is 1 KiB
/// too): an idle or trickling client holds little; a busy one doubles it up to `READ_CHUNK`.
const FIRST_READ: usize = 1024;
/// The storage for an answer (see [`ReadBuf::for_answer`]): a typical response head and a
/// small body; zeroed for every answer, so not a full `READ_CHUNK`.
const FIRST_ANSWER_READ: usize = 4 * 1024;

impl ReadBuf {
    pub fn with_bytes(bytes: Vec<u8>) -> ReadBuf {
        ReadBuf {
            end: bytes.len(),
            bytes,
            start: 0,
            consumed: 0,
            filled: false,
        }
    }

    /// An empty buffer with storage from the start, for an answer expected now (an origin's
    /// response): a small answer's head and body come in one read, and that read, shorter
    /// than its room, tells the runtime the socket is drained, so neither this connection's
    /// next read nor the pool's check of it finds nothing.
    pub fn for_answer() -> ReadBuf {
        ReadBuf {
            bytes: vec![0; FIRST_ANSWER_READ],
            ..ReadBuf::default()
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks `n` bytes as used.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        self.consumed += n as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes consumed so far ([`ReadBuf::take`] hands bytes over without consuming them).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Takes every unconsumed byte out. With none, no storage goes along.
    pub fn take(&mut self) -> Vec<u8> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.truncate(self.end);
        bytes.drain(..self.start);
        self.start = 0;
        self.end = 0;
        bytes
    }

    /// Reads once from `from`, appending at most `max` bytes; `Ok(0)` is end of stream.
    /// Waits at most `timeout` for the bytes to come. Storage is taken only once there are
    /// bytes to read, so a connection waiting for its first byte holds none.
    pub async fn fill<R: ReadSide>(
        &mut self,
        from: &mut R,
        max: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        self.fill_within(from, &mut Unlimited, max, timeout).await
    }

    /// [`ReadBuf::fill`], reading only what `budget` allows (a forwarded body's bandwidth
    /// limit); waiting for the budget counts against `timeout` too.
    pub async fn fill_within<R: ReadSide, B: Budget>(
        &mut self,
        from: &mut R,
        budget: &mut B,
        max: usize,
        timeout: Duration,
    ) -> io::Result<usize> {
        tokio::time::timeout(timeout, self.fill_once(from, budget, max))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Reads once from `from`, appending at most `max` bytes, however long that takes: for
    /// a read that only watches a stream, such as a client that may leave while its answer
    /// is awaited; `Ok(0)` is end of stream.
    pub async fn watch<R: ReadSide>(&mut self, from: &mut R, max: usize) -> io::Result<usize> {
        self.fill_once(from, &mut Unlimited, max).await
    }

    async fn fill_once<R: ReadSide, B: Budget>(
        &mut self,
        from: &mut R,
        budget: &mut B,
        max: usize,
    ) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.end {
            // Move the tail to the front rather than grow.
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = max.min(READ_CHUNK);
        let had_storage = !self.bytes.is_empty();
        poll_fn(|cx| {
            ready!(from.poll_read_ready(cx))?;
            let room = self.make_room(want);
            let end = self.end;
            let into = &mut self.bytes[end..end + room];
            match relay::poll_read(cx, from, budget, into) {
                Poll::Pending => {
                    // Woken with nothing to read: an idle connection still holds nothing.
                    if !had_storage {
                        self.bytes = Vec::new();
                    }
                    Poll::Pending
                }
                Poll::Ready(Ok(n)) => {
                    self.filled = n == room;
                    self.end += n;
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Room for the next read, at most `want` bytes. The storage grows (doubling, from
    /// `FIRST_READ`) only when its room is used up or the last read filled it.
    fn make_room(&mut self, want: usize) -> usize {
        let room = self.bytes.len() - self.end;
        if room == 0 || (self.filled && room < want) {
            let grown = (self.bytes.len() * 2).max(FIRST_READ).min(self.end + want);
            if grown > self.bytes.len() {
                self.bytes.resize(grown, 0);
            }
        }
        (self.bytes.len() - self.end).min(want)
    }

    /// The storage held, for tests of its growth.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Reads from `from` until the buffer holds a complete head (up to `\r\n\r\n`) and
    /// returns its length. Waits up to `idle` for a first byte, then allows `timeout` for the
    /// whole head.
    pub async fn read_head<R: ReadSide>(
        &mut self,
        from: &mut R,
        limit: usize,
        idle: Duration,
        timeout: Duration,
    ) -> Result<usize, HeadError> {
        let mut deadline = (!self.is_empty()).then(|| deadline::from_now(timeout));
        let mut scanned = 0;
        loop {
            let data = self.data();
            if let Some(end) = find_head_end(data, scanned) {
                return Ok(end);
            }
            if data.len() >= limit {
                return Err(HeadError::TooLarge);
            }
            scanned = data.len().saturating_sub(3);
            let room = limit - data.len();
            let wait = deadline.map_or(idle, |d| d.saturating_duration_since(Instant::now()));
            let started = deadline.is_some();
            match self.fill(from, room, wait).await {
                Ok(0) if started => return Err(HeadError::Closed),
                Ok(0) => return Err(HeadError::Silent),
                Ok(_) => {
                    deadline.get_or_insert_with(|| deadline::from_now(timeout));
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(if started {
                        HeadError::TimedOut
                    } else {
                        HeadError::Idle
                    });
                }
                Err(_) if started => return Err(HeadError::Closed),
                Err(_) => return Err(HeadError::Silent),
            }
        }
    }
}

/// A stream and the bytes read from it that nobody has consumed yet.
#[derive(Debug)]
pub struct Conn<S> {
    pub stream: S,
    pub buf: ReadBuf,
}

impl<S: ReadSide> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: ReadBuf::default(),
        }
    }

    /// A stream whose next bytes answer what was just sent (see [`ReadBuf::for_answer`]).
    pub fn for_answer(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: ReadBuf::for_answer(),
        }
    }

    /// A stream whose first bytes were already read (with a PROXY protocol header).
    pub fn with_bytes(stream: S, bytes: Vec<u8>) -> Conn<S> {
        Conn {
            stream,
            buf: ReadBuf::with_bytes(bytes),
        }
    }

    /// Reads until the buffer holds a complete head (see [`ReadBuf::read_head`]).
    pub async fn read_head(
        &mut self,
        limit: usize,
        idle: Duration,
        timeout: Duration,
    ) -> Result<usize, HeadError> {
        self.buf
            .read_head(&mut self.stream, limit, idle, timeout)
            .await
    }
}

/// Why no complete head was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Nothing arrived: the peer closed or failed before a first byte.
    Silent,
    /// Nothing arrived within the idle time.
    Idle,
    /// Part of a head arrived, then the peer closed or failed.
    Closed,
    /// Part of a head arrived, but not the rest in time.
    TimedOut,
    /// The head is longer than the limit.
    TooLarge,
}

/// The offset just past the blank line that ends a head, searching from `from`. A bare
/// `\n\n` also ends it, so that the strict parser can refuse such a head at once instead of
/// waiting for a `\r\n\r\n` that never comes.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let window = buf.get(from..)?;
    let end = window
        .iter()
        .enumerate()
        .find_map(|(i, &b)| match (b, &window[i + 1..]) {
            (b'\n', [b'\n', ..]) => Some(i + 2),
            (b'\n', [b'\r', b'\n', ..]) => Some(i + 3),
            _ => None,
        })?;
    Some(from + end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn consume_and_take_keep_the_unread_tail() {
        let mut buf = ReadBuf::with_bytes(b"head\r\n\r\nbody".to_vec());
        buf.consume(8);
        assert_eq!(buf.data(), b"body");
        assert_eq!(buf.take(), b"body");
        assert!(buf.is_empty());
    }

    #[test]
    fn finds_the_end_of_a_head_across_reads() {
        let buf = b"CONNECT a:1 HTTP/1.1\r\n\r\nEARLY";
        assert_eq!(find_head_end(buf, 0), Some(buf.len() - 5));
        assert_eq!(find_head_end(buf, 20), Some(buf.len() - 5));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nX", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\n\r\nX", 0), Some(23));
    }

    /// A loopback pair: the accepted end and the client end.
    async fn pair() -> (TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    #[tokio::test]
    async fn storage_starts_small_and_grows_with_the_bytes() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = pair().await;
        let mut buf = ReadBuf::default();
        let wait = Duration::from_secs(10);
        // Nothing has arrived: waiting for it takes no storage.
        let idle = buf
            .fill(&mut server, 64 * 1024, Duration::from_millis(50))
            .await;
        assert_eq!(idle.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(buf.capacity(), 0);
        // A byte at a time (a slowloris) keeps the first, small storage.
        for _ in 0..10 {
            client.write_all(b"G").await.unwrap();
            assert_eq!(buf.fill(&mut server, 64 * 1024, wait).await.unwrap(), 1);
        }
        assert_eq!(buf.capacity(), FIRST_READ);
        // A stream of bytes grows it, up to one read's worth past what is held.
        let bulk = vec![b'x'; 256 * 1024];
        let writer = tokio::spawn(async move {
            client.write_all(&bulk).await.unwrap();
            client
        });
        while buf.len() < 10 + 256 * 1024 {
            assert!(buf.fill(&mut server, usize::MAX, wait).await.unwrap() > 0);
            assert!(buf.capacity() <= buf.len() + READ_CHUNK);
        }
        assert!(buf.capacity() > FIRST_READ);
        assert_eq!(&buf.data()[..10], b"GGGGGGGGGG");
        drop(writer.await.unwrap());
        assert_eq!(buf.fill(&mut server, usize::MAX, wait).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_head_timeout_too_long_to_represent_is_no_panic() {
        use tokio::io::AsyncWriteExt;
        let (mut server, mut client) = pair().await;
        let mut buf = ReadBuf::with_bytes(b"GET / HTTP/1.1\r\n".to_vec());
        client.write_all(b"\r\n").await.unwrap();
        let end = buf
            .read_head(&mut server, 1024, Duration::MAX, Duration::MAX)
            .await
            .unwrap();
        assert_eq!(end, 18);
        buf.consume(end);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(
            buf.read_head(&mut server, 1024, Duration::MAX, Duration::MAX)
                .await
                .unwrap(),
            18
        );
    }
}
