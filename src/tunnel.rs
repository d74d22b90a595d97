//! Moving bytes both ways between a client and its upstream: the hot path.
//!
//! One task drives both directions, each a [`Direction`] of the byte mover. A direction holds
//! a pipe (Linux: `splice(2)`, no copy through user space) or a buffer only while it has bytes
//! to move, so an idle tunnel costs its two sockets and little else. End of stream on one side is
//! passed on as `shutdown(Write)` on the other while the opposite direction keeps flowing; the
//! tunnel ends when both directions have ended, on the first error, or after `idle` without a
//! single byte read or written in either direction.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::deadline;
use crate::live::Counters;
use crate::relay::{Budget, Direction};
use crate::transport::{ClientStream, ReadSide};

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

/// Runs the tunnel until it ends; `budgets` limit the bytes going up and down. The bytes it
/// moves are added to `counters` as they move, for the status page.
pub async fn run<C: ClientStream, U: ClientStream, B: Budget>(
    client: C,
    upstream: U,
    early: Early,
    idle: Duration,
    budgets: [B; 2],
    counters: &Counters,
) -> Outcome {
    relay(
        client,
        upstream,
        early,
        idle,
        cfg!(target_os = "linux"),
        budgets,
        counters,
    )
    .await
}

/// [`run`], with or without `splice(2)`: splice only where both ends are plain sockets.
async fn relay<C: ClientStream, U: ClientStream, B: Budget>(
    mut client: C,
    mut upstream: U,
    early: Early,
    idle: Duration,
    splice: bool,
    [mut up_budget, mut down_budget]: [B; 2],
    counters: &Counters,
) -> Outcome {
    let splice =
        splice && ReadSide::plain(&client).is_some() && ReadSide::plain(&upstream).is_some();
    let mut up = Direction::new(early.up, splice);
    let mut down = Direction::new(early.down, splice);
    let mut idle_timer = IdleTimer::new(idle);
    // What `counters` has been told: each wake-up that moved bytes publishes the difference.
    let mut published = (0, 0);
    let end = {
        let (mut client_in, mut client_out) = client.split();
        let (mut upstream_in, mut upstream_out) = upstream.split();
        poll_fn(|cx| {
            let mut moved = false;
            // Plain sockets are closed when the tunnel ends: the last FIN needs no shutdown.
            if splice && down.is_done() {
                up.close_at_end();
            }
            let up_state = up.poll(
                cx,
                &mut client_in,
                &mut upstream_out,
                &mut up_budget,
                &mut moved,
            );
            if splice && up.is_done() {
                down.close_at_end();
            }
            let down_state = down.poll(
                cx,
                &mut upstream_in,
                &mut client_out,
                &mut down_budget,
                &mut moved,
            );
            if moved {
                counters.add(up.bytes - published.0, down.bytes - published.1);
                published = (up.bytes, down.bytes);
            }
            match (up_state, down_state) {
                (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(End::Failed(e)),
                (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(End::Closed),
                _ => idle_timer.poll(cx, moved).map(|()| End::IdleTimeout),
            }
        })
        .await
    };
    if let End::Failed(_) = end {
        // Pass a reset on as a reset: a plain close could pass for a complete transfer.
        client.abort();
        upstream.abort();
    }
    Outcome {
        up: up.bytes,
        down: down.bytes,
        end,
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
    use crate::relay::Unlimited;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Counters no test reads.
    static COUNTED: Counters = Counters::new();

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
            let counters: &'static Counters = Box::leak(Box::default());
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
                [Unlimited; 2],
                counters,
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
            assert_eq!(
                counters.get(),
                (outcome.up, outcome.down),
                "published as counted"
            );
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
            [Unlimited; 2],
            &COUNTED,
        ));
        client.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        origin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop((client, origin));
        let outcome = tunnel.await.expect("the relay ends without a panic");
        assert!(matches!(outcome.end, End::Closed), "{:?}", outcome.end);
    }

    /// A stream that is not a plain socket, as a TLS stream is not: it says so, and splits
    /// through [`tokio::io::split`].
    struct Wrapped(TcpStream);

    impl tokio::io::AsyncRead for Wrapped {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Wrapped {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    impl ReadSide for Wrapped {
        fn plain(&self) -> Option<&TcpStream> {
            None
        }
    }

    impl crate::transport::WriteSide for Wrapped {
        fn plain(&self) -> Option<&TcpStream> {
            None
        }
    }

    impl ClientStream for Wrapped {
        type Reader<'a> = tokio::io::ReadHalf<&'a mut Wrapped>;
        type Writer<'a> = tokio::io::WriteHalf<&'a mut Wrapped>;

        fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
            tokio::io::split(self)
        }

        fn socket(&self) -> Option<&TcpStream> {
            Some(&self.0)
        }
    }

    /// Where one end is not a plain socket, splice is not tried: the bytes, early ones first,
    /// and the half-closes cross through a buffer.
    #[tokio::test]
    async fn a_stream_that_is_not_a_plain_socket_is_copied_through_a_buffer() {
        let (mut client, client_end) = pair().await;
        let (mut origin, origin_end) = pair().await;
        let early = Early {
            up: b"early ".to_vec(),
            down: Vec::new(),
        };
        let tunnel = tokio::spawn(relay(
            Wrapped(client_end),
            origin_end,
            early,
            Duration::from_secs(10),
            true,
            [Unlimited; 2],
            &COUNTED,
        ));
        let up: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..1 << 20).map(|i| (i % 241) as u8).collect();
        let (sent_up, sent_down) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move { exchange(&mut client, &sent_up).await });
        let origin_side = tokio::spawn(async move { exchange(&mut origin, &sent_down).await });
        let at_origin = origin_side.await.unwrap();
        assert_eq!(&at_origin[..6], b"early ");
        assert!(at_origin[6..] == up[..], "upstream bytes differ");
        assert!(
            client_side.await.unwrap() == down,
            "downstream bytes differ"
        );
        let outcome = tunnel.await.unwrap();
        assert!(matches!(outcome.end, End::Closed), "{:?}", outcome.end);
        assert_eq!((outcome.up, outcome.down), (6 + (1 << 20), 1 << 20));
    }
}
