//! Bandwidth limits: `limit_rate`, `limit_rate_after`, `limit_rate_per_client` and
//! `limit_rate_per_user`, as [`Throttle`]s that the byte mover asks before every read and
//! splice ([`Budget`]).
//!
//! Each limit is a token bucket that fills at its rate and holds a tenth of a second's worth,
//! so a reader that was scheduled late catches up a little and a new connection cannot burst
//! much. A connection's own limit is a bucket of its own; the shared ones (one per client
//! address, one per user, each direction apart) live in a process-wide map keyed by who
//! shares them, which outlives reloads and drops an entry when its last connection ends.
//!
//! A grant never exceeds a quarter of a bucket, and a connection that finds a bucket empty
//! waits until a whole grant has accumulated: connections sharing a bucket take turns rather
//! than one of them draining it at every refill. Bytes are taken from the buckets when they
//! have moved (a bucket may go briefly into debt when two threads are granted the same
//! tokens; the debt is waited out).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::settings::Rates;
use crate::metrics;
use crate::relay::Budget;

/// Which way bytes go: each has its own buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// From the client (a tunnel's upload).
    Up,
    /// To the client (a tunnel's download, a forwarded response).
    Down,
}

/// How long a bucket's capacity lasts at its rate.
const BURST: Duration = Duration::from_millis(100);
/// The smallest capacity, for very low rates.
const MIN_CAPACITY: f64 = 1024.0;

/// A token bucket: tokens are bytes that may move now.
#[derive(Debug)]
struct Bucket {
    /// Bytes per second.
    rate: f64,
    /// May be negative: bytes moved on tokens that another connection took at the same time.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Bucket {
        let mut bucket = Bucket {
            rate: 0.0,
            tokens: 0.0,
            last: now,
        };
        bucket.set_rate(rate);
        bucket.tokens = bucket.capacity();
        bucket
    }

    fn set_rate(&mut self, rate: u64) {
        self.rate = rate.max(1) as f64;
    }

    fn capacity(&self) -> f64 {
        (self.rate * BURST.as_secs_f64()).max(MIN_CAPACITY)
    }

    /// The most one grant may take: a quarter of the capacity, so that sharers take turns.
    fn grant_cap(&self) -> f64 {
        self.capacity() / 4.0
    }

    fn refill(&mut self, now: Instant) {
        // Another thread may have refilled from a later instant: time never runs back.
        if now <= self.last {
            return;
        }
        let elapsed = (now - self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
    }

    /// How many of `want` bytes may move now, or how long until a whole grant may.
    fn grant(&mut self, now: Instant, want: usize) -> Result<usize, Duration> {
        self.refill(now);
        let cap = self.grant_cap();
        if self.tokens >= 1.0 {
            return Ok((self.tokens.min(cap) as usize).clamp(1, want));
        }
        let needed = cap.min(want as f64) - self.tokens;
        Err(Duration::from_secs_f64(needed / self.rate).max(Duration::from_millis(1)))
    }

    fn spend(&mut self, moved: usize) {
        self.tokens -= moved as f64;
    }
}

/// Who shares a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Sharer {
    Client(IpAddr),
    User(String),
}

type Key = (Sharer, Way);

/// The shared buckets now in use, process-wide: bounded by the connections open.
static SHARED: LazyLock<Mutex<HashMap<Key, Arc<Mutex<Bucket>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn shared() -> std::sync::MutexGuard<'static, HashMap<Key, Arc<Mutex<Bucket>>>> {
    SHARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection's hold on a shared bucket; the entry goes when the last hold does.
#[derive(Debug)]
struct Share {
    key: Key,
    bucket: Arc<Mutex<Bucket>>,
}

impl Share {
    /// The bucket of `key`, at `rate` from now on (a reload may have changed it).
    fn join(key: Key, rate: u64) -> Share {
        let now = Instant::now();
        let mut map = shared();
        let bucket = Arc::clone(
            map.entry(key.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(rate, now)))),
        );
        lock(&bucket).set_rate(rate);
        Share { key, bucket }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut map = shared();
        // The map's reference and this one: nobody else uses the bucket.
        if Arc::strong_count(&self.bucket) == 2 {
            map.remove(&self.key);
        }
    }
}

fn lock(bucket: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    bucket.lock().unwrap_or_else(|e| e.into_inner())
}

/// The budget of one direction of one connection (or one forwarded response). Without a
/// limit it is one empty pointer and grants everything.
#[derive(Debug, Default)]
pub struct Throttle(Option<Box<Limiter>>);

#[derive(Debug)]
struct Limiter {
    /// `limit_rate_after`: bytes left to move before any limit applies.
    free: u64,
    /// `limit_rate`: this connection's own bucket.
    own: Option<Bucket>,
    /// `limit_rate_per_client`, `limit_rate_per_user`.
    shares: Vec<Share>,
    /// Armed while every grant must wait.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The last grant came after a wait: what it moves was delayed by a limit.
    waited: bool,
    /// Bytes moved after a wait, counted in the metrics when the throttle ends.
    delayed: u64,
    /// The user the delayed bytes are counted for, if the metrics count them per user.
    user: Option<String>,
}

impl Throttle {
    /// The budget for bytes going `way` on a connection from `client`, authenticated as
    /// `user`, under `rates`.
    pub fn new(rates: &Rates, way: Way, client: IpAddr, user: Option<&str>) -> Throttle {
        let mut shares = Vec::new();
        if rates.per_client > 0 {
            let key = (Sharer::Client(client.to_canonical()), way);
            shares.push(Share::join(key, rates.per_client));
        }
        if let (Some(user), true) = (user, rates.per_user > 0) {
            let key = (Sharer::User(user.to_string()), way);
            shares.push(Share::join(key, rates.per_user));
        }
        let own =
            (rates.per_connection > 0).then(|| Bucket::new(rates.per_connection, Instant::now()));
        if own.is_none() && shares.is_empty() {
            return Throttle(None);
        }
        Throttle(Some(Box::new(Limiter {
            free: rates.after,
            own,
            shares,
            sleep: None,
            waited: false,
            delayed: 0,
            user: user.map(str::to_string),
        })))
    }

    /// Whether any limit applies.
    pub fn is_limited(&self) -> bool {
        self.0.is_some()
    }
}

impl Limiter {
    /// How many of `want` bytes every bucket allows now, or the longest wait among them.
    fn grant(&mut self, want: usize) -> Result<usize, Duration> {
        let now = Instant::now();
        let mut granted = want;
        let mut wait = Duration::ZERO;
        let mut ask = |bucket: &mut Bucket| match bucket.grant(now, granted) {
            Ok(n) => granted = granted.min(n),
            Err(w) => wait = wait.max(w),
        };
        if let Some(own) = &mut self.own {
            ask(own);
        }
        for share in &self.shares {
            ask(&mut lock(&share.bucket));
        }
        if wait.is_zero() {
            Ok(granted)
        } else {
            Err(wait)
        }
    }
}

impl Budget for Throttle {
    fn poll_grant(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        let Some(limiter) = self.0.as_deref_mut() else {
            return Poll::Ready(want);
        };
        let want = want.max(1);
        if limiter.free > 0 {
            return Poll::Ready(want.min(usize::try_from(limiter.free).unwrap_or(usize::MAX)));
        }
        // Bounded: a sleep that is already over is polled again at most once more.
        for _ in 0..3 {
            match limiter.grant(want) {
                Ok(n) => {
                    limiter.sleep = None;
                    return Poll::Ready(n);
                }
                Err(wait) => {
                    limiter.waited = true;
                    let deadline = Instant::now() + wait;
                    let sleep = match &mut limiter.sleep {
                        Some(sleep) => {
                            sleep.as_mut().reset(deadline);
                            sleep
                        }
                        None => limiter
                            .sleep
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn spent(&mut self, moved: usize) {
        let Some(limiter) = self.0.as_deref_mut() else {
            return;
        };
        if limiter.free > 0 {
            limiter.free = limiter.free.saturating_sub(moved as u64);
            return;
        }
        if let Some(own) = &mut limiter.own {
            own.spend(moved);
        }
        for share in &limiter.shares {
            lock(&share.bucket).spend(moved);
        }
        if std::mem::take(&mut limiter.waited) {
            limiter.delayed += moved as u64;
        }
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        if self.delayed > 0 {
            metrics::get().delayed(self.user.as_deref(), self.delayed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_grants_up_to_a_quarter_then_waits_for_a_whole_grant() {
        let start = Instant::now();
        let mut bucket = Bucket::new(100_000, start);
        assert_eq!(bucket.capacity(), 10_000.0);
        assert_eq!(bucket.grant(start, 1 << 20), Ok(2_500));
        bucket.spend(10_000);
        let wait = bucket.grant(start, 1 << 20).unwrap_err();
        assert_eq!(wait, Duration::from_millis(25));
        assert_eq!(bucket.grant(start + wait, 1 << 20), Ok(2_500));
    }

    #[test]
    fn shared_buckets_are_dropped_with_their_last_connection() {
        let rates = Rates {
            per_client: 1000,
            ..Rates::default()
        };
        let client: IpAddr = "192.0.2.77".parse().unwrap();
        let key = (Sharer::Client(client), Way::Down);
        let one = Throttle::new(&rates, Way::Down, client, None);
        let two = Throttle::new(
            &rates,
            Way::Down,
            "::ffff:192.0.2.77".parse().unwrap(),
            None,
        );
        assert!(shared().contains_key(&key));
        drop(one);
        assert!(shared().contains_key(&key), "still used");
        drop(two);
        assert!(!shared().contains_key(&key));
    }

    #[tokio::test]
    async fn free_bytes_first_then_grants_then_a_wait() {
        let rates = Rates {
            per_connection: 10_000,
            after: 5_000,
            ..Rates::default()
        };
        let mut throttle = Throttle::new(&rates, Way::Down, [127, 0, 0, 1].into(), None);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(throttle.poll_grant(&mut cx, 1 << 20), Poll::Ready(5_000));
        throttle.spent(5_000);
        // A quarter of a tenth of a second's worth, no more.
        assert_eq!(throttle.poll_grant(&mut cx, 1 << 20), Poll::Ready(256));
        throttle.spent(1_024);
        assert_eq!(throttle.poll_grant(&mut cx, 1 << 20), Poll::Pending);
    }

    #[test]
    fn no_limit_is_no_allocation() {
        let throttle = Throttle::new(&Rates::default(), Way::Up, [127, 0, 0, 1].into(), None);
        assert!(!throttle.is_limited());
    }
}
