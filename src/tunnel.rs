//! Moving bytes both ways between a client and its upstream: the hot path.
//!
//! One task drives both directions. A direction holds a buffer only while it has bytes to
//! move, so an idle tunnel costs its two sockets and little else. End of stream on one side is
//! passed on as `shutdown(Write)` on the other while the opposite direction keeps flowing; the
//! tunnel ends when both directions have ended, on the first error, or after `idle` without a
//! single byte read or written in either direction.

use std::future::poll_fn;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

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
    let mut up = Direction::with_pending(early.up);
    let mut down = Direction::with_pending(early.down);
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
#[derive(Default)]
struct Direction {
    /// Present only while bytes are waiting to be written, or a read is about to happen.
    buf: Vec<u8>,
    /// `buf[written..filled]` is waiting to be written.
    written: usize,
    filled: usize,
    /// The source sent FIN.
    eof: bool,
    /// The FIN was passed on; this direction is finished.
    done: bool,
    bytes: u64,
}

impl Direction {
    fn with_pending(bytes: Vec<u8>) -> Direction {
        Direction {
            filled: bytes.len(),
            bytes: bytes.len() as u64,
            buf: bytes,
            ..Direction::default()
        }
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
        loop {
            if self.written < self.filled {
                ready!(to.poll_write_ready(cx))?;
                match to.try_write(&self.buf[self.written..self.filled]) {
                    Ok(n) => {
                        self.written += n;
                        *moved = true;
                        if self.written == self.filled {
                            self.written = 0;
                            self.filled = 0;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if self.eof {
                self.done = true;
                self.buf = Vec::new();
                // The destination may already be gone; the other direction will notice.
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                return Poll::Ready(Ok(()));
            }
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
        }
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
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, progressed: bool) -> Poll<()> {
        if progressed {
            self.last_progress = Instant::now();
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let deadline = self.last_progress + self.idle;
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}
