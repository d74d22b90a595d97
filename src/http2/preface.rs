//! Telling HTTP/2 from HTTP/1.1 on one plain listener by the client's first bytes.
//!
//! A client that knows the proxy speaks HTTP/2 (prior knowledge, RFC 9113 §3.3) opens with the
//! 24-byte preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`; no HTTP/1.1 request starts like that
//! (`PRI` is not a method any client sends). So the first bytes are read, only as far as they
//! still match the preface, and handed on: to HTTP/2 as the start of its stream, or to the
//! HTTP/1.1 reader as the start of its first head.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::transport::ClientStream;

/// The HTTP/2 connection preface a client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes said.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// The preface, whole: HTTP/2. The bytes read so far, preface included.
    Http2(Vec<u8>),
    /// Anything else: HTTP/1.1 (or garbage, which its reader answers). The bytes read so far.
    Http1(Vec<u8>),
    /// Closed, or silent for `idle`, before a first byte.
    Silent,
}

/// Reads the first bytes of `stream` (after `early`, which a PROXY header's segment may have
/// carried) until they are the preface or cannot be. Waits up to `idle` for each read; a
/// client that stops in the middle of something preface-like is handed to HTTP/1.1, whose
/// reader times it out as it would any stalled head.
pub async fn sniff<S: ClientStream>(stream: &mut S, early: Vec<u8>, idle: Duration) -> Sniffed {
    let mut seen = early;
    loop {
        if seen.len() >= PREFACE.len() && seen.starts_with(PREFACE) {
            return Sniffed::Http2(seen);
        }
        let shared = seen.len().min(PREFACE.len());
        if seen[..shared] != PREFACE[..shared] {
            return Sniffed::Http1(seen);
        }
        // Nothing held while the client is silent.
        let ready = tokio::time::timeout(idle, poll_fn(|cx| stream.poll_read_ready(cx))).await;
        let mut chunk = [0u8; 24];
        let read = match ready {
            Ok(Ok(())) => tokio::time::timeout(idle, stream.read(&mut chunk)).await,
            _ => return silent_or_http1(seen),
        };
        match read {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            _ => return silent_or_http1(seen),
        }
    }
}

fn silent_or_http1(seen: Vec<u8>) -> Sniffed {
    if seen.is_empty() {
        Sniffed::Silent
    } else {
        Sniffed::Http1(seen)
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been read again.
    offset: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.offset < this.prefix.len() {
            let rest = &this.prefix[this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            if this.offset == this.prefix.len() {
                this.prefix = Vec::new();
                this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.unwrap().0, client.unwrap())
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2() {
        let (mut server, mut client) = pair().await;
        let sniffing = tokio::spawn(async move { sniff(&mut server, Vec::new(), WAIT).await });
        client.write_all(&PREFACE[..5]).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&PREFACE[5..]).await.unwrap();
        client.write_all(b"\0\0\0\x04").await.unwrap();
        match sniffing.await.unwrap() {
            Sniffed::Http2(seen) => assert!(seen.starts_with(PREFACE)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_request_is_http1_and_its_bytes_are_handed_on() {
        for sent in [
            &b"PUT http://a/ HTTP/1.1\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\n",
        ] {
            let (mut server, mut client) = pair().await;
            client.write_all(sent).await.unwrap();
            match sniff(&mut server, Vec::new(), WAIT).await {
                Sniffed::Http1(seen) => assert!(!seen.is_empty() && sent.starts_with(&seen)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn silence_and_early_bytes() {
        let (mut server, client) = pair().await;
        drop(client);
        assert_eq!(sniff(&mut server, Vec::new(), WAIT).await, Sniffed::Silent);
        let (mut server, _client) = pair().await;
        let seen = sniff(&mut server, PREFACE.to_vec(), WAIT).await;
        assert_eq!(seen, Sniffed::Http2(PREFACE.to_vec()));
    }
}
