//! The in-memory connection between one HTTP/2 stream and the HTTP/1.1 pipeline.
//!
//! A stream is served as one HTTP/1.1 exchange: its request, translated, is written into a
//! bounded in-memory pipe whose other end [`crate::connection`] reads as a client connection,
//! so every policy, limit and log line applies to HTTP/2 as it is. What a byte stream cannot
//! say by itself, that a side ended with an error rather than a close, travels beside it:
//! a client's RST_STREAM makes the proxy's reads and writes fail (a tunnel resets its
//! upstream), and the proxy's [`ClientStream::abort`] makes the stream's reads fail (the
//! stream is reset, never ended as if complete).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

use crate::transport::{ClientStream, ReadSide, WriteSide};

/// How each end of a pipe ended, when not by a close.
#[derive(Debug, Default)]
struct Ends {
    /// The stream was reset (by the client, or because its connection went away).
    stream_reset: AtomicBool,
    /// The proxy aborted its answer: a cut-off response or a failed tunnel.
    proxy_aborted: AtomicBool,
}

/// A pipe: the stream's end and the proxy's end. `buffer` bounds the bytes in flight in each
/// direction.
pub fn pair(buffer: usize) -> (StreamEnd, ProxyEnd) {
    let (stream, proxy) = tokio::io::duplex(buffer);
    let ends = Arc::new(Ends::default());
    (
        StreamEnd {
            io: stream,
            ends: Arc::clone(&ends),
            finished: false,
        },
        ProxyEnd { io: proxy, ends },
    )
}

/// The end the HTTP/2 stream drives. Dropped without [`StreamEnd::finish`], it counts as a
/// reset: the proxy's end fails from then on.
#[derive(Debug)]
pub struct StreamEnd {
    io: DuplexStream,
    ends: Arc<Ends>,
    finished: bool,
}

impl StreamEnd {
    /// Both directions ended cleanly: the proxy's end sees a close.
    pub fn finish(mut self) {
        self.finished = true;
    }

    fn proxy_aborted(&self) -> bool {
        self.ends.proxy_aborted.load(Ordering::Acquire)
    }
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        if !self.finished {
            self.ends.stream_reset.store(true, Ordering::Release);
        }
    }
}

/// An aborted end reads as a reset, even where the bytes before it were all delivered.
fn aborted() -> io::Error {
    io::ErrorKind::ConnectionReset.into()
}

impl AsyncRead for StreamEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.proxy_aborted() {
            return Poll::Ready(Err(aborted()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        // The proxy's end went away: an abort just before it is what ended it.
        if matches!(read, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && self.proxy_aborted()
        {
            return Poll::Ready(Err(aborted()));
        }
        read
    }
}

impl AsyncWrite for StreamEnd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The end the proxy reads the translated request from and writes its answer to: a client
/// connection to [`crate::connection`], never a plain socket (tunnels copy through a buffer).
#[derive(Debug)]
pub struct ProxyEnd {
    io: DuplexStream,
    ends: Arc<Ends>,
}

impl ProxyEnd {
    fn stream_reset(&self) -> bool {
        self.ends.stream_reset.load(Ordering::Acquire)
    }
}

impl AsyncRead for ProxyEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stream_reset() {
            return Poll::Ready(Err(aborted()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && self.stream_reset()
        {
            return Poll::Ready(Err(aborted()));
        }
        read
    }
}

impl AsyncWrite for ProxyEnd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stream_reset() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl ReadSide for ProxyEnd {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

impl WriteSide for ProxyEnd {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

impl ClientStream for ProxyEnd {
    type Reader<'a> = tokio::io::ReadHalf<&'a mut ProxyEnd>;
    type Writer<'a> = tokio::io::WriteHalf<&'a mut ProxyEnd>;

    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        tokio::io::split(self)
    }

    fn socket(&self) -> Option<&TcpStream> {
        None
    }

    fn abort(&self) {
        self.ends.proxy_aborted.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_close_is_a_close_both_ways() {
        let (mut stream, mut proxy) = pair(64);
        stream.write_all(b"up").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        proxy.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"up");
        proxy.write_all(b"down").await.unwrap();
        drop(proxy);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"down");
        stream.finish();
    }

    #[tokio::test]
    async fn a_stream_dropped_unfinished_is_a_reset_to_the_proxy() {
        let (stream, mut proxy) = pair(64);
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            proxy.read(&mut byte).await
        });
        drop(stream);
        let error = reader.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn an_abort_is_a_reset_to_the_stream() {
        let (mut stream, mut proxy) = pair(64);
        proxy.write_all(b"partial").await.unwrap();
        proxy.abort();
        drop(proxy);
        let mut got = Vec::new();
        let error = stream.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }
}
