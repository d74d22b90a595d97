//! The client's side of the wire: what an accepted socket becomes before HTTP begins.
//!
//! Accepting yields a TCP socket. [`handshake`] turns it into the client's stream and what is
//! known about the client ([`ClientInfo`]). For a plain listener the handshake only tunes the
//! socket; it is the one place where a PROXY-protocol header would be read (and the real
//! client address learnt) or a TLS session accepted. Everything after it (head reading,
//! tunnels, forwarding, error answers) works on any [`ClientStream`], so such a handshake
//! changes nothing downstream.
//!
//! A stream splits into a [`ReadSide`] and a [`WriteSide`], so one task can read from it while
//! it writes to it (a request body going up while its response comes down). A side says when
//! it is a plain socket: bytes are then moved between two plain sockets with `splice(2)`, and
//! through a buffer otherwise.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp;

/// What is known about a client once its handshake is done.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// The address the connection came from.
    pub peer: SocketAddr,
    /// The address it was accepted on, when asked for (`$server_addr`).
    pub local: Option<SocketAddr>,
}

/// Turns an accepted socket into the client's stream. Plain TCP: the socket itself, with
/// Nagle's algorithm off (heads and small answers leave at once). `want_local` asks for the
/// local address, a system call that only a log line needs.
pub async fn handshake(
    socket: TcpStream,
    peer: SocketAddr,
    want_local: bool,
) -> io::Result<(TcpStream, ClientInfo)> {
    let _ = socket.set_nodelay(true);
    let local = want_local.then(|| socket.local_addr().ok()).flatten();
    Ok((socket, ClientInfo { peer, local }))
}

/// Makes the coming close of `socket` a reset: its peer must not take a cut-off message, or
/// a failed transfer, for a complete one.
pub fn reset(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// A connection's byte stream, whatever carries it (plain TCP today).
pub trait ClientStream: ReadSide + WriteSide + 'static {
    /// The side [`ClientStream::split`] reads with.
    type Reader<'a>: ReadSide
    where
        Self: 'a;
    /// The side [`ClientStream::split`] writes with.
    type Writer<'a>: WriteSide
    where
        Self: 'a;

    /// Borrows the two directions separately, to read and write at once. For a TCP socket
    /// this costs nothing; another stream may use [`tokio::io::split`].
    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// The TCP connection underneath, for what only a socket can do: a reset close, a
    /// shutdown when the proxy closes every connection at once.
    fn socket(&self) -> &TcpStream;
}

/// The reading direction of a stream.
pub trait ReadSide: AsyncRead + Unpin + Send {
    /// The socket itself, when the stream's bytes are the socket's bytes (no TLS record or
    /// other framing in between): `splice(2)` may then read from it.
    fn plain(&self) -> Option<&TcpStream>;

    /// Ready once a read would not wait, so that no buffer is held while nothing arrives.
    /// A stream that cannot tell says ready, and its reader holds a buffer while it waits.
    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The writing direction of a stream.
pub trait WriteSide: AsyncWrite + Unpin + Send {
    /// The socket itself, when bytes written to it go out as they are: `splice(2)` may then
    /// write into it.
    fn plain(&self) -> Option<&TcpStream>;
}

/// The read half [`tokio::io::split`] makes of a stream that is not a plain socket (TLS).
impl<T: AsyncRead + Send> ReadSide for tokio::io::ReadHalf<T> {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

/// The write half [`tokio::io::split`] makes of a stream that is not a plain socket (TLS).
impl<T: AsyncWrite + Send> WriteSide for tokio::io::WriteHalf<T> {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

impl ClientStream for TcpStream {
    type Reader<'a> = tcp::ReadHalf<'a>;
    type Writer<'a> = tcp::WriteHalf<'a>;

    fn split(&mut self) -> (tcp::ReadHalf<'_>, tcp::WriteHalf<'_>) {
        TcpStream::split(self)
    }

    fn socket(&self) -> &TcpStream {
        self
    }
}

impl ReadSide for TcpStream {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl WriteSide for TcpStream {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl ReadSide for tcp::ReadHalf<'_> {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.as_ref().poll_read_ready(cx)
    }
}

impl WriteSide for tcp::WriteHalf<'_> {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}
