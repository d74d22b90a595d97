//! The byte mover: every byte sluice passes on, from a head or body read to a tunnel's
//! splice, goes through the steps here.
//!
//! - [`poll_read`] is the one read from a client or an upstream into memory;
//! - [`write_all`] is the one way bytes are written out with a stall timeout;
//! - [`Direction`] moves one direction of a tunnel (CONNECT or upgraded connection): through
//!   a pipe with `splice(2)` when both ends are plain sockets (Linux), through a buffer
//!   otherwise. A tunnel runs two of them.
//!
//! Before each read or splice the mover asks a [`Budget`] how many bytes it may take: the one
//! place where a rate limit caps a connection: [`Unlimited`], or a bandwidth limit's
//! [`crate::limits::rate::Throttle`].

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncWrite, ReadBuf};

#[cfg(target_os = "linux")]
use crate::splice::{PIPE_CAPACITY, Pipe};
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
#[cfg(target_os = "linux")]
use tokio::io::Interest;

use crate::transport::{ReadSide, WriteSide};

/// How many bytes may move next: consulted before every read and splice.
pub trait Budget {
    /// How many of `want` bytes (at least one) may be read now. Pending, with a wake-up
    /// arranged, while none may.
    fn poll_grant(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize>;

    /// `moved` bytes were read out of a grant.
    fn spent(&mut self, moved: usize) {
        let _ = moved;
    }
}

/// No limit: every byte asked for may move.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl Budget for Unlimited {
    #[inline]
    fn poll_grant(&mut self, _: &mut Context<'_>, want: usize) -> Poll<usize> {
        Poll::Ready(want)
    }
}

/// Reads once from `from` into `buf`, as much as `budget` allows; `Ok(0)` is end of stream.
pub fn poll_read<R: ReadSide>(
    cx: &mut Context<'_>,
    from: &mut R,
    budget: &mut impl Budget,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    poll_read_into(cx, from, budget, ReadBuf::new(buf))
}

/// [`poll_read`] into the room of `out`, which may be memory never written: a buffer taken
/// for one read need not be zeroed first.
fn poll_read_into<R: ReadSide>(
    cx: &mut Context<'_>,
    from: &mut R,
    budget: &mut impl Budget,
    mut out: ReadBuf<'_>,
) -> Poll<io::Result<usize>> {
    let room = out.remaining();
    if room == 0 {
        return Poll::Ready(Ok(0));
    }
    let allowed = ready!(budget.poll_grant(cx, room)).clamp(1, room);
    let mut limited = out.take(allowed);
    ready!(Pin::new(from).poll_read(cx, &mut limited))?;
    let n = limited.filled().len();
    budget.spent(n);
    Poll::Ready(Ok(n))
}

/// Writes all of `bytes` and flushes them; `timeout` bounds each wait for `to` to take more.
pub async fn write_all<W: AsyncWrite + Unpin>(
    to: &mut W,
    mut bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    let stalled = || io::Error::from(io::ErrorKind::TimedOut);
    while !bytes.is_empty() {
        let write = poll_fn(|cx| Pin::new(&mut *to).poll_write(cx, bytes));
        let n = tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| stalled())??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    let flush = poll_fn(|cx| Pin::new(&mut *to).poll_flush(cx));
    tokio::time::timeout(timeout, flush)
        .await
        .map_err(|_| stalled())?
}

/// Bytes moved per buffered read.
const BUFFER_SIZE: usize = 32 * 1024;

/// One direction of a tunnel: reads from one side, writes to the other, and passes the end of
/// stream on as a shutdown of the writing side.
///
/// On Linux the bytes go through a pipe with `splice(2)`, never entering user space, when both
/// sides are plain sockets; a buffer is used for bytes read before the tunnel started, and
/// where splicing is not possible. Either is held only while bytes move.
#[derive(Default)]
pub struct Direction {
    /// Present only while bytes are waiting to be written, or a read is about to happen.
    buf: Vec<u8>,
    /// `buf[written..filled]` is waiting to be written.
    written: usize,
    filled: usize,
    /// Bytes were written and not flushed yet.
    unflushed: bool,
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
    /// The destination is closed as soon as this direction ends, which sends the FIN.
    closed_at_end: bool,
    /// Bytes read from the source, `pending` ones included.
    pub bytes: u64,
}

impl Direction {
    /// A direction that first writes `pending` (bytes read before the tunnel started), then
    /// moves the rest, with `splice(2)` if `splice` and both sides allow it.
    pub fn new(pending: Vec<u8>, splice: bool) -> Direction {
        let mut direction = Direction::default();
        direction.filled = pending.len();
        direction.bytes = pending.len() as u64;
        if !pending.is_empty() {
            // Else its storage (the head reader's) would stay for the tunnel's life.
            direction.buf = pending;
        }
        direction.splice = splice && cfg!(target_os = "linux");
        direction
    }

    /// The FIN was passed on.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The destination is a plain socket that is closed as soon as this direction ends (the
    /// other one has ended): closing sends the FIN, so the end of stream is passed on without a
    /// `shutdown(2)` of its own.
    pub fn close_at_end(&mut self) {
        self.closed_at_end = true;
    }

    /// Moves as many bytes as the sides allow now; sets `moved` if any moved. Ready(Ok) once
    /// the source's end of stream has been passed on to the destination.
    pub fn poll<R: ReadSide, W: WriteSide>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        budget: &mut impl Budget,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        // Each step makes progress or returns Pending, registered for the side it waits on.
        loop {
            if self.written < self.filled {
                ready!(self.poll_write_buffered(cx, to, moved))?;
            } else if self.in_pipe > 0 {
                ready!(self.poll_drain_pipe(cx, to, moved))?;
            } else if self.unflushed {
                ready!(Pin::new(&mut *to).poll_flush(cx))?;
                self.unflushed = false;
            } else if self.eof {
                if !self.closed_at_end {
                    // The destination may already be gone; the other direction will notice.
                    let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
                }
                self.done = true;
                self.buf = Vec::new();
                return Poll::Ready(Ok(()));
            } else if self.splice {
                ready!(self.poll_splice_in(cx, from, budget, moved))?;
            } else {
                ready!(self.poll_read_buffered(cx, from, budget, moved))?;
            }
        }
    }

    fn poll_write_buffered<W: WriteSide>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(to).poll_write(cx, &self.buf[self.written..self.filled]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.written += n;
        self.unflushed = true;
        *moved = true;
        if self.written == self.filled {
            self.written = 0;
            self.filled = 0;
            if self.splice {
                self.buf = Vec::new(); // early bytes are out; the pipe takes over
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_read_buffered<R: ReadSide>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        budget: &mut impl Budget,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        if self.buf.capacity() != BUFFER_SIZE {
            // Early bytes came in a buffer of their own size; from now on use a standard one.
            self.buf = Vec::new();
        }
        ready!(from.poll_read_ready(cx))?;
        if self.buf.capacity() == 0 {
            // Not zeroed: a read writes before anything is read back. Zeroing 32 KiB at each
            // wake-up cost a short tunnel's copy path 13 % more CPU.
            self.buf = Vec::with_capacity(BUFFER_SIZE);
        }
        self.buf.clear();
        let room = ReadBuf::uninit(self.buf.spare_capacity_mut());
        match poll_read_into(cx, from, budget, room) {
            Poll::Ready(Ok(0)) => self.eof = true,
            Poll::Ready(Ok(n)) => {
                // SAFETY: the read was handed the buffer's spare capacity from its start, and
                // it reports the first `n` bytes of it filled, so they are initialised.
                unsafe { self.buf.set_len(n) };
                self.filled = n;
                self.bytes += n as u64;
                *moved = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                // Nothing to move after all: do not hold a buffer while waiting.
                self.buf = Vec::new();
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    #[cfg(target_os = "linux")]
    fn poll_splice_in<R: ReadSide>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        budget: &mut impl Budget,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        let Some(socket) = from.plain() else {
            self.splice = false;
            return Poll::Ready(Ok(()));
        };
        ready!(socket.poll_read_ready(cx))?;
        let Poll::Ready(want) = budget.poll_grant(cx, PIPE_CAPACITY) else {
            // Waiting for a rate limit holds no pipe, as waiting for bytes holds none.
            self.release_pipe();
            return Poll::Pending;
        };
        let want = want.clamp(1, PIPE_CAPACITY);
        let pipe = match self.pipe.take().map_or_else(Pipe::take, Ok) {
            Ok(pipe) => self.pipe.insert(pipe),
            Err(error) => {
                log::debug!("no pipe for splice ({error}): copying through a buffer");
                self.splice = false;
                return Poll::Ready(Ok(()));
            }
        };
        let fd = socket.as_raw_fd();
        match socket.try_io(Interest::READABLE, || pipe.fill_from(fd, want)) {
            Ok(0) => {
                self.eof = true;
                self.release_pipe();
            }
            Ok(n) => {
                budget.spent(n);
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
    fn poll_drain_pipe<W: WriteSide>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        let (Some(socket), Some(pipe)) = (to.plain(), &self.pipe) else {
            return Poll::Ready(Err(io::Error::other("bytes in a pipe with nowhere to go")));
        };
        ready!(socket.poll_write_ready(cx))?;
        let fd = socket.as_raw_fd();
        let left = self.in_pipe;
        match socket.try_io(Interest::WRITABLE, || pipe.drain_into(fd, left)) {
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
    fn poll_splice_in<R: ReadSide>(
        &mut self,
        _: &mut Context<'_>,
        _: &mut R,
        _: &mut impl Budget,
        _: &mut bool,
    ) -> Poll<io::Result<()>> {
        self.splice = false;
        Poll::Ready(Ok(()))
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_drain_pipe<W: WriteSide>(
        &mut self,
        _: &mut Context<'_>,
        _: &mut W,
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
