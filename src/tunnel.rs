//! Moving bytes both ways between a client and its upstream: the hot path.
//!
//! One task drives both directions. A direction holds a pipe (Linux: `splice(2)`, no copy
//! through user space) or a buffer only while it has bytes to move, so an idle tunnel costs
//! its two sockets and little else. End of stream on one side is
//! passed on as `shutdown(Write)` on the other while the opposite direction keeps flowing; the
//! tunnel ends when both directions have ended, on the first error, or after `idle` without a
//! single byte read or written in either direction.

use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

#[cfg(target_os = "linux")]
use crate::splice::{PIPE_CAPACITY, Pipe};
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;

use crate::deadline;
use crate::stream::reset;

/// Bytes moved per read.
const BUFFER_SIZE: usize = 32 * 1024;

/// How a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their sending direction and every byte was delivered.
    Closed,
    /// Nothing moved for the data timeout.
    IdleTimeout,
    /// A socket failed (typically a reset); the other side is reset too.
    Failed(io::Error),
}

/// What a tunnel carried.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes from the client to the upstream, `early` bytes included.
    pub up: u64,
    /// Bytes from the upstream to the client.
    pub down: u64,
    pub end: End,
}

/// Bytes already read from one side before the tunnel starts: they cross first.
#[derive(Debug, Default)]
pub struct Early {
    /// From the client: sent right after its request head.
    pub up: Vec<u8>,
    /// From the upstream: sent right after its `101 Switching Protocols` head.
    pub down: Vec<u8>,
}

/// Runs the tunnel until it ends.
pub async fn run(client: TcpStream, upstream: TcpStream, early: Early, idle: Duration) -> Outcome {
    relay(client, upstream, early, idle, cfg!(target_os = "linux")).await
}

/// [`run`], with or without `splice(2)`.
async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    early: Early,
    idle: Duration,
    splice: bool,
) -> Outcome {
    let mut up = Direction::with_pending(early.up, splice);
    let mut down = Direction::with_pending(early.down, splice);
    let mut idle_timer = IdleTimer::new(idle);
    let end = poll_fn(|cx| {
        let mut moved = false;
        let up_state = up.poll(cx, &client, &upstream, &mut moved);
        let down_state = down.poll(cx, &upstream, &client, &mut moved);
        match (up_state, down_state) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(End::Failed(e)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(End::Closed),
            _ => idle_timer.poll(cx, moved).map(|()| End::IdleTimeout),
        }
    })
    .await;
    if let End::Failed(_) = end {
        // Pass a reset on as a reset: a plain close could pass for a complete transfer.
        reset(&client);
        reset(&upstream);
    }
    Outcome {
        up: up.bytes,
        down: down.bytes,
        end,
    }
}

/// One direction of a tunnel: read from one socket, write to the other.
///
/// On Linux the bytes go through a pipe with `splice(2)`, never entering user space; a
/// buffer is used for bytes read before the tunnel started, and where splicing is not
/// possible. Either is held only while bytes move.
#[derive(Default)]
struct Direction {
    /// Present only while bytes are waiting to be written, or a read is about to happen.
    buf: Vec<u8>,
    /// `buf[written..filled]` is waiting to be written.
    written: usize,
    filled: usize,
    /// Read with `splice(2)` into `pipe` rather than into `buf`.
    splice: bool,
    /// Present only while bytes move.
    #[cfg(target_os = "linux")]
    pipe: Option<Pipe>,
    /// Bytes in `pipe` waiting to be written.
    in_pipe: usize,
    /// The source sent FIN.
    eof: bool,
    /// The FIN was passed on; this direction is finished.
    done: bool,
    bytes: u64,
}

impl Direction {
    fn with_pending(bytes: Vec<u8>, splice: bool) -> Direction {
        let mut direction = Direction::default();
        direction.filled = bytes.len();
        direction.bytes = bytes.len() as u64;
        if !bytes.is_empty() {
            // Else its storage (the head reader's) would stay for the tunnel's life.
            direction.buf = bytes;
        }
        direction.splice = splice;
        direction
    }

    /// Moves as many bytes as the sockets allow now. Ready(Ok) once the source's end of stream
    /// has been passed on to the destination.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        // Each step makes progress or returns Pending; a step that met WouldBlock returns
        // Ready so that the next round registers for readiness.
        loop {
            if self.written < self.filled {
                ready!(self.poll_write_buffered(cx, to, moved))?;
            } else if self.in_pipe > 0 {
                ready!(self.poll_drain_pipe(cx, to, moved))?;
            } else if self.eof {
                self.done = true;
                self.buf = Vec::new();
                // The destination may already be gone; the other direction will notice.
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                return Poll::Ready(Ok(()));
            } else if self.splice {
                ready!(self.poll_splice_in(cx, from, moved))?;
            } else {
                ready!(self.poll_read_buffered(cx, from, moved))?;
            }
        }
    }

    fn poll_write_buffered(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        ready!(to.poll_write_ready(cx))?;
        match to.try_write(&self.buf[self.written..self.filled]) {
            Ok(n) => {
                self.written += n;
                *moved = true;
                if self.written == self.filled {
                    self.written = 0;
                    self.filled = 0;
                    if self.splice {
                        self.buf = Vec::new(); // early bytes are out; the pipe takes over
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
        Poll::Ready(Ok(()))
    }

    fn poll_read_buffered(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        if self.buf.len() != BUFFER_SIZE {
            // Early bytes came in a buffer of their own size; from now on use a standard one.
            self.buf = Vec::new();
        }
        ready!(from.poll_read_ready(cx))?;
        if self.buf.is_empty() {
            self.buf = vec![0; BUFFER_SIZE];
        }
        match from.try_read(&mut self.buf) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.filled = n;
                self.bytes += n as u64;
                *moved = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing to move after all: do not hold a buffer while waiting.
                self.buf = Vec::new();
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
        Poll::Ready(Ok(()))
    }

    #[cfg(target_os = "linux")]
    fn poll_splice_in(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        ready!(from.poll_read_ready(cx))?;
        let pipe = match self.pipe.take().map_or_else(Pipe::take, Ok) {
            Ok(pipe) => self.pipe.insert(pipe),
            Err(error) => {
                log::debug!("no pipe for splice ({error}): copying through a buffer");
                self.splice = false;
                return Poll::Ready(Ok(()));
            }
        };
        let fd = from.as_raw_fd();
        match from.try_io(Interest::READABLE, || pipe.fill_from(fd, PIPE_CAPACITY)) {
            Ok(0) => {
                self.eof = true;
                self.release_pipe();
            }
            Ok(n) => {
                self.in_pipe = n;
                self.bytes += n as u64;
                *moved = true;
            }
            // Nothing to read: an idle direction holds no pipe.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.release_pipe(),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.splice = false;
                self.release_pipe();
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
        Poll::Ready(Ok(()))
    }

    #[cfg(target_os = "linux")]
    fn poll_drain_pipe(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        ready!(to.poll_write_ready(cx))?;
        let Some(pipe) = &self.pipe else {
            return Poll::Ready(Err(io::Error::other("bytes in a pipe that is gone")));
        };
        let fd = to.as_raw_fd();
        let left = self.in_pipe;
        match to.try_io(Interest::WRITABLE, || pipe.drain_into(fd, left)) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                self.in_pipe -= n;
                *moved = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
        Poll::Ready(Ok(()))
    }

    /// Gives an empty pipe back to the pool.
    #[cfg(target_os = "linux")]
    fn release_pipe(&mut self) {
        if let Some(pipe) = self.pipe.take()
            && self.in_pipe == 0
        {
            pipe.give_back();
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_splice_in(
        &mut self,
        _: &mut Context<'_>,
        _: &TcpStream,
        _: &mut bool,
    ) -> Poll<io::Result<()>> {
        self.splice = false;
        Poll::Ready(Ok(()))
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_drain_pipe(
        &mut self,
        _: &mut Context<'_>,
        _: &TcpStream,
        _: &mut bool,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::other("no pipes on this system")))
    }
}

#[cfg(target_os = "linux")]
impl Drop for Direction {
    fn drop(&mut self) {
        // A pipe still holding bytes (a failed tunnel) is closed, never reused.
        self.release_pipe();
    }
}

/// Fires after `idle` without progress. Progress only records the time; the timer is re-armed
/// lazily when it fires early, so the hot path never touches the timer wheel.
struct IdleTimer {
    idle: Duration,
    last_progress: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(idle: Duration) -> IdleTimer {
        let now = Instant::now();
        IdleTimer {
            idle,
            last_progress: now,
            sleep: Box::pin(tokio::time::sleep_until(deadline::after(now, idle))),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, progressed: bool) -> Poll<()> {
        if progressed {
            self.last_progress = Instant::now();
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let deadline = deadline::after(self.last_progress, self.idle);
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected sockets: (the end kept by the test, the end given to the tunnel).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outer = TcpStream::connect(listener.local_addr().unwrap());
        let (outer, accepted) = tokio::join!(outer, listener.accept());
        (outer.unwrap(), accepted.unwrap().0)
    }

    /// Writes `bytes` then half-closes, while reading everything the other side sends.
    async fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        let (mut read, mut write) = stream.split();
        let sending = async {
            write.write_all(bytes).await.unwrap();
            write.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let (_, received) = tokio::join!(sending, read.read_to_end(&mut got));
        received.unwrap();
        got
    }

    /// Early bytes first, then a megabyte each way, then a half-close each way: with splice
    /// and with the buffer copy that replaces it where splice is not available.
    #[tokio::test]
    async fn both_ways_byte_exact_with_and_without_splice() {
        for splice in [true, false] {
            let (mut client, client_end) = pair().await;
            let (mut origin, origin_end) = pair().await;
            let early = Early {
                up: b"early ".to_vec(),
                down: Vec::new(),
            };
            let tunnel = tokio::spawn(relay(
                client_end,
                origin_end,
                early,
                Duration::from_secs(10),
                splice && cfg!(target_os = "linux"),
            ));
            let up: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
            let down: Vec<u8> = (0..1 << 20).map(|i| (i % 241) as u8).collect();
            let (sent_up, sent_down) = (up.clone(), down.clone());
            let client_side = tokio::spawn(async move { exchange(&mut client, &sent_up).await });
            let origin_side = tokio::spawn(async move { exchange(&mut origin, &sent_down).await });
            let at_origin = origin_side.await.unwrap();
            assert_eq!(&at_origin[..6], b"early ", "splice {splice}");
            assert!(
                at_origin[6..] == up[..],
                "splice {splice}: upstream bytes differ"
            );
            assert!(
                client_side.await.unwrap() == down,
                "splice {splice}: downstream bytes differ"
            );
            let outcome = tunnel.await.unwrap();
            assert!(matches!(outcome.end, End::Closed), "{:?}", outcome.end);
            assert_eq!((outcome.up, outcome.down), (6 + (1 << 20), 1 << 20));
        }
    }

    /// A library caller may pass any idle time: one too long to represent means never.
    #[tokio::test]
    async fn an_idle_time_too_long_to_represent_is_no_panic() {
        let (mut client, client_end) = pair().await;
        let (mut origin, origin_end) = pair().await;
        let tunnel = tokio::spawn(relay(
            client_end,
            origin_end,
            Early::default(),
            Duration::MAX,
            false,
        ));
        client.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        origin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop((client, origin));
        let outcome = tunnel.await.expect("the relay ends without a panic");
        assert!(matches!(outcome.end, End::Closed), "{:?}", outcome.end);
    }
}
