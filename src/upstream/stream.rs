//! The connection to an upstream: a plain socket, or TLS to a parent proxy (`server ...
//! ssl`). Its halves say which, so a tunnel between two plain sockets still moves its bytes
//! with `splice(2)`, and one with TLS on either side copies them through a buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, tcp};
use tokio_rustls::client::TlsStream;

use crate::transport::{ClientStream, ReadSide, WriteSide};

/// An upstream connection.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of an [`UpstreamStream`].
pub enum Reader<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(ReadHalf<&'a mut TlsStream<TcpStream>>),
}

/// The writing half of an [`UpstreamStream`].
pub enum Writer<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(WriteHalf<&'a mut TlsStream<TcpStream>>),
}

impl From<TcpStream> for UpstreamStream {
    fn from(socket: TcpStream) -> UpstreamStream {
        UpstreamStream::Plain(socket)
    }
}

impl std::fmt::Debug for UpstreamStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamStream::Plain(socket) => f.debug_tuple("Plain").field(socket).finish(),
            UpstreamStream::Tls(tls) => f.debug_tuple("Tls").field(tls.get_ref().0).finish(),
        }
    }
}

/// Forwards an I/O call to whichever variant `$self` is.
macro_rules! either {
    ($self:expr, $inner:ident => $call:expr) => {
        match $self {
            Self::Plain($inner) => $call,
            Self::Tls($inner) => $call,
        }
    };
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsyncRead for Reader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Writer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

impl ClientStream for UpstreamStream {
    type Reader<'a> = Reader<'a>;
    type Writer<'a> = Writer<'a>;

    fn split(&mut self) -> (Reader<'_>, Writer<'_>) {
        match self {
            UpstreamStream::Plain(socket) => {
                let (read, write) = socket.split();
                (Reader::Plain(read), Writer::Plain(write))
            }
            UpstreamStream::Tls(tls) => {
                let (read, write) = tokio::io::split(&mut **tls);
                (Reader::Tls(read), Writer::Tls(write))
            }
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            UpstreamStream::Plain(socket) => socket,
            UpstreamStream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl ReadSide for UpstreamStream {
    fn plain(&self) -> Option<&TcpStream> {
        match self {
            UpstreamStream::Plain(socket) => Some(socket),
            UpstreamStream::Tls(_) => None,
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            UpstreamStream::Plain(socket) => socket.poll_read_ready(cx),
            UpstreamStream::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

impl WriteSide for UpstreamStream {
    fn plain(&self) -> Option<&TcpStream> {
        match self {
            UpstreamStream::Plain(socket) => Some(socket),
            UpstreamStream::Tls(_) => None,
        }
    }
}

impl ReadSide for Reader<'_> {
    fn plain(&self) -> Option<&TcpStream> {
        match self {
            Reader::Plain(half) => Some(half.as_ref()),
            Reader::Tls(_) => None,
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Reader::Plain(half) => half.as_ref().poll_read_ready(cx),
            Reader::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

impl WriteSide for Writer<'_> {
    fn plain(&self) -> Option<&TcpStream> {
        match self {
            Writer::Plain(half) => Some(half.as_ref()),
            Writer::Tls(_) => None,
        }
    }
}
