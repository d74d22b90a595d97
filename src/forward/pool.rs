//! Idle upstream connections kept for reuse, so repeated requests to one origin do not pay a
//! new TCP handshake each.
//!
//! Connections are kept per [`PoolKey`]: the route and the destination, so a connection
//! opened one way is never handed to a request that must go another (a direct connection to
//! an origin is not one through a parent proxy, nor one parent's connection another's).
//! Bounded three ways: per key, in total, and in idle time. A connection is checked
//! for a close or stray bytes from the origin before it is handed out again, and a sweeper
//! task, running while the pool is not empty, closes expired connections and those the origin
//! closed, so they do not hold descriptors until the next request to their destination.
//!
//! Each worker (see [`crate::workers`]) keeps its own idle connections: a connection is
//! watched by the reactor of the worker that opened it, so it is handed only to requests that
//! worker serves, and no lock is shared between workers.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::route::Route;
use crate::upstream::Upstream;

/// Idle connections kept per destination (on one route), per worker: as many as clients
/// commonly have requests in flight to one origin at once, or the pool drops connections
/// between requests and the next ones pay a new TCP handshake (16 did so 3–4 % of the time
/// under 32 clients; nginx's `keepalive` is per worker too).
const PER_DESTINATION: usize = 64;
/// Idle connections kept in all, per worker.
const TOTAL: usize = 256;
/// How long a connection may sit idle; origins commonly close theirs after 5–60 s.
const IDLE_TIME: Duration = Duration::from_secs(30);
/// How often the sweeper looks for connections to close.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What an idle connection is kept under: a request takes only connections that went its way
/// to its destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub route: Route,
    /// `host:port` as the request named it; empty through a parent, whose connections carry
    /// requests for any destination.
    pub destination: String,
}

/// The idle connections of one `server` block, per worker, by [`PoolKey`].
pub struct Pool {
    per_worker: Box<[Arc<Mutex<Idle>>]>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new(1)
    }
}

#[derive(Default)]
struct Idle {
    by_key: HashMap<PoolKey, Vec<(Upstream, Instant)>>,
    total: usize,
    /// A sweeper task is running.
    sweeping: bool,
}

impl Pool {
    /// A pool for `workers` workers.
    pub fn new(workers: usize) -> Pool {
        Pool {
            per_worker: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// The idle connections of the worker the caller runs on.
    fn idle(&self) -> &Arc<Mutex<Idle>> {
        &self.per_worker[crate::workers::current() % self.per_worker.len()]
    }

    /// A live idle connection kept under `key`, most recently used first.
    pub fn take(&self, key: &PoolKey) -> Option<Upstream> {
        let mut idle = self.idle().lock().unwrap_or_else(|e| e.into_inner());
        let Idle { by_key, total, .. } = &mut *idle;
        let list = by_key.get_mut(key)?;
        let mut found = None;
        while let Some((upstream, since)) = list.pop() {
            *total -= 1;
            if since.elapsed() < IDLE_TIME && is_quiet(upstream.stream.socket()) {
                found = Some(upstream);
                break;
            }
        }
        if list.is_empty() {
            by_key.remove(key);
        }
        found
    }

    /// Keeps `upstream` for the next request under `key`, if there is room.
    pub fn put(&self, key: &PoolKey, upstream: Upstream) {
        let mut idle = self.idle().lock().unwrap_or_else(|e| e.into_inner());
        if idle.total >= TOTAL {
            idle.drop_expired();
            if idle.total >= TOTAL {
                return;
            }
        }
        let Idle { by_key, total, .. } = &mut *idle;
        let list = by_key.entry(key.clone()).or_default();
        if list.len() >= PER_DESTINATION {
            list.remove(0);
            *total -= 1;
        }
        list.push((upstream, Instant::now()));
        *total += 1;
        if !idle.sweeping
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            idle.sweeping = true;
            runtime.spawn(sweep(Arc::downgrade(self.idle())));
        }
    }
}

/// Closes dead and expired idle connections every [`SWEEP_EVERY`] until the pool is empty.
async fn sweep(idle: Weak<Mutex<Idle>>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.drop_dead();
        if idle.total == 0 {
            idle.sweeping = false;
            return;
        }
    }
}

impl Idle {
    fn drop_expired(&mut self) {
        self.retain(|_, since| since.elapsed() < IDLE_TIME);
    }

    /// Drops the expired connections and those the origin closed or wrote to.
    fn drop_dead(&mut self) {
        self.retain(|stream, since| since.elapsed() < IDLE_TIME && is_quiet(stream));
    }

    fn retain(&mut self, mut keep: impl FnMut(&TcpStream, Instant) -> bool) {
        let mut total = 0;
        self.by_key.retain(|_, list| {
            list.retain(|(upstream, since)| keep(upstream.stream.socket(), *since));
            total += list.len();
            !list.is_empty()
        });
        self.total = total;
    }
}

/// True if the origin has neither closed the connection nor sent anything while it was idle.
/// The runtime's readiness answers without a system call: a close or a stray byte makes the
/// socket readable, and the relay's last read left it not readable (a short read clears it).
/// Only a socket marked readable is peeked at, and a peek that finds nothing clears the mark.
fn is_quiet(stream: &TcpStream) -> bool {
    let mut probe = [MaybeUninit::<u8>::uninit(); 1];
    let peeked = stream.try_io(Interest::READABLE, || {
        socket2::SockRef::from(stream).peek(&mut probe)
    });
    match peeked {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false, // end of stream, or bytes nobody asked for
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The key of direct connections to `destination`.
    fn direct(destination: &str) -> PoolKey {
        PoolKey {
            route: Route::Direct,
            destination: destination.to_string(),
        }
    }

    /// A pooled-to-be upstream connection and its origin's end.
    async fn pair() -> (Upstream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (
            Upstream {
                stream: stream.into(),
                addr,
                route: Route::Direct,
                early: Vec::new(),
            },
            server,
        )
    }

    #[tokio::test]
    async fn hands_back_live_connections_and_drops_closed_ones() {
        let pool = Pool::default();
        let (live, _live_peer) = pair().await;
        let (closed, closed_peer) = pair().await;
        let (chatty, mut chatty_peer) = pair().await;
        pool.put(&direct("a:80"), live);
        pool.put(&direct("a:80"), closed);
        pool.put(&direct("a:80"), chatty);
        drop(closed_peer);
        chatty_peer.write_all(b"unexpected").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take(&direct("a:80")).is_some(),
            "the live connection is found under the dead ones"
        );
        assert!(pool.take(&direct("a:80")).is_none());
        assert!(pool.take(&direct("b:80")).is_none());
    }

    #[tokio::test]
    async fn connections_the_origin_closed_are_swept_without_more_traffic() {
        let pool = Pool::default();
        let (live, _live_peer) = pair().await;
        let (closed, closed_peer) = pair().await;
        pool.put(&direct("a:80"), live);
        pool.put(&direct("b:80"), closed);
        drop(closed_peer);
        tokio::time::sleep(SWEEP_EVERY * 2).await;
        let idle = pool.idle().lock().unwrap();
        assert_eq!(idle.total, 1, "the closed connection is still held");
        assert!(idle.by_key.contains_key(&direct("a:80")));
    }

    #[tokio::test]
    async fn keeps_at_most_the_per_destination_limit() {
        let pool = Pool::default();
        let mut peers = Vec::new();
        for _ in 0..PER_DESTINATION + 3 {
            let (stream, peer) = pair().await;
            peers.push(peer);
            pool.put(&direct("a:80"), stream);
        }
        let mut taken = 0;
        while pool.take(&direct("a:80")).is_some() {
            taken += 1;
        }
        assert_eq!(taken, PER_DESTINATION);
    }
}
