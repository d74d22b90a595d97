//! The client's side of the wire: what an accepted socket becomes before HTTP begins.
//!
//! Accepting yields a TCP socket. [`handshake`] turns it into the client's stream and what is
//! known about the client ([`ClientInfo`]). For a plain listener the handshake only tunes the
//! socket; on a `proxy_protocol` listener it reads the balancer's PROXY header and learns the
//! real client's address ([`proxy_protocol`]); on an `ssl` listener the TLS session is set up
//! next ([`tls`]). Everything after it (head reading, tunnels, forwarding, error answers) works
//! on any [`ClientStream`], so such a handshake changes nothing downstream.
//!
//! A stream splits into a [`ReadSide`] and a [`WriteSide`], so one task can read from it while
//! it writes to it (a request body going up while its response comes down). A side says when
//! it is a plain socket: bytes are then moved between two plain sockets with `splice(2)`, and
//! through a buffer otherwise.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp;

pub mod proxy_protocol;
pub mod settings;
pub mod tls;

pub use settings::RealIp;

/// What is known about a client once its handshake is done.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client: the TCP peer, or the source a trusted PROXY header named. Every policy,
    /// limit and log line uses it (`$remote_addr`).
    pub peer: SocketAddr,
    /// The TCP peer: the balancer when a PROXY header named the client
    /// (`$realip_remote_addr`).
    pub tcp_peer: SocketAddr,
    /// The source the PROXY header named, if it named one (`$proxy_protocol_addr`).
    pub proxy_protocol: Option<SocketAddr>,
    /// The address it was accepted on, when asked for (`$server_addr`).
    pub local: Option<SocketAddr>,
    /// The request came in a stream of an HTTP/2 connection (`$server_protocol` HTTP/2.0).
    pub http2: bool,
    /// What the TLS handshake told, on an `ssl` listener (`$ssl_*`, a client certificate).
    pub tls: Option<Arc<tls::TlsFacts>>,
}

/// An accepted socket after its handshake.
pub struct Handshake {
    pub stream: TcpStream,
    pub info: ClientInfo,
    /// Bytes the client sent that the handshake read past its own (the request head that came
    /// in the PROXY header's segment): the connection reads them first.
    pub early: Vec<u8>,
}

/// Turns an accepted socket into the client's stream. Plain TCP: the socket itself, with
/// Nagle's algorithm off (heads and small answers leave at once). With `real_ip` (a
/// `proxy_protocol` listener) a peer outside `set_real_ip_from`, or one that sends no valid
/// header in time, is closed without an answer, after one log line. `want_local` asks for the
/// local address, a system call that only a log line needs.
pub async fn handshake(
    mut socket: TcpStream,
    peer: SocketAddr,
    want_local: bool,
    real_ip: Option<&RealIp>,
) -> Option<Handshake> {
    if !cfg!(target_os = "linux") {
        // Linux sockets inherit it from their listener (`bind_one`).
        let _ = socket.set_nodelay(true);
    }
    let local = want_local.then(|| socket.local_addr().ok()).flatten();
    let mut info = ClientInfo {
        peer,
        tcp_peer: peer,
        proxy_protocol: None,
        local,
        http2: false,
        tls: None,
    };
    let Some(real_ip) = real_ip else {
        return Some(Handshake {
            stream: socket,
            info,
            early: Vec::new(),
        });
    };
    if !real_ip.trusts(peer.ip()) {
        log::warn!(
            "{peer}: closed: a proxy_protocol listener takes connections only from set_real_ip_from addresses"
        );
        reset(&socket);
        return None;
    }
    match proxy_protocol::read(&mut socket, real_ip.timeout).await {
        Ok(header) => {
            if let Some(source) = header.source {
                info.peer = source;
                info.proxy_protocol = Some(source);
            }
            Some(Handshake {
                stream: socket,
                info,
                early: header.early,
            })
        }
        Err(error) => {
            log::warn!("{peer}: closed: {error}");
            reset(&socket);
            None
        }
    }
}

/// Makes the coming close of `socket` a reset: its peer must not take a cut-off message, or
/// a failed transfer, for a complete one.
pub fn reset(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// A connection's byte stream, whatever carries it (plain TCP, or TLS over it).
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

    /// The TCP connection underneath, for what only a socket can do: a shutdown when the
    /// proxy closes every connection at once. `None` for a stream that shares its connection
    /// (an HTTP/2 stream): closing that connection ends it.
    fn socket(&self) -> Option<&TcpStream>;

    /// Makes the coming close a reset: the peer must not take a cut-off message, or a failed
    /// transfer, for a complete one. An HTTP/2 stream is reset alone (RST_STREAM).
    fn abort(&self) {
        if let Some(socket) = self.socket() {
            reset(socket);
        }
    }
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

    fn socket(&self) -> Option<&TcpStream> {
        Some(self)
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
