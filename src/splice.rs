//! Zero-copy relaying on Linux: `splice(2)` moves a tunnel's bytes from one socket into a
//! pipe and from the pipe into the other socket without their ever entering user space.
//!
//! A pipe is two descriptors and, while it holds data, kernel pages. A tunnel direction takes
//! one from a small shared pool only while bytes move, and gives it back empty as soon as its
//! source has nothing more to read: an idle tunnel holds no pipe, so neither its memory nor
//! its descriptors grow with the number of idle tunnels.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// Bytes asked for per splice into a pipe: the pipe's capacity. 256 KiB moved single streams
/// about 20 % faster than the default 64 KiB here. Pipe pages count against the user's
/// `fs.pipe-user-pages-soft` (64 MiB by default): past it, new pipes are not enlarged, or hold
/// a page or two, and bytes still move, a few KiB per call.
pub const PIPE_CAPACITY: usize = 256 * 1024;
/// Empty pipes kept for reuse; more are closed.
const POOL_MAX: usize = 64;

/// Empty pipes ready for a direction that has bytes to move.
static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// A non-blocking pipe.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// An empty pipe from the pool, or a new one.
    pub fn take() -> io::Result<Pipe> {
        let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Returns an empty pipe to the pool.
    pub fn give_back(self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }

    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe means fewer system calls per byte; the default (64 KiB) still works.
        // SAFETY: F_SETPIPE_SZ takes an integer and only resizes the pipe.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_CAPACITY as libc::c_int,
            );
        }
        Ok(Pipe { read, write })
    }

    /// Moves up to `max` bytes from the socket `from` into this pipe. `Ok(0)` is end of stream.
    pub fn fill_from(&self, from: RawFd, max: usize) -> io::Result<usize> {
        splice(from, self.write.as_raw_fd(), max)
    }

    /// Moves up to `max` bytes from this pipe into the socket `to`.
    pub fn drain_into(&self, to: RawFd, max: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), to, max)
    }
}

fn splice(from: RawFd, to: RawFd, max: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both descriptors are open for the duration of the call; null offsets mean the
    // current positions, as they must for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            max,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
