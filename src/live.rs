//! The connections open right now, for the status page (`/status`, `/status.json`).
//!
//! Each client connection registers one [`Connection`] when its conversation starts and the
//! [`Registered`] guard removes it when the connection (or the tunnel it became) ends. What
//! the hot path pays: one entry and one short lock of one of `SHARDS` maps per connection, a
//! `Relaxed` atomic store at each state change, and `Relaxed` adds where bytes are already
//! counted (a tunnel's directions, a forwarded request's totals). Everything else (ages,
//! rates, sorting) is computed when the page is asked for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::request::Head;
use crate::route::Route;

/// Insertions and removals of connections on different cores rarely meet on one lock.
const SHARDS: usize = 16;

static REGISTRY: [Mutex<BTreeMap<u64, Arc<Connection>>>; SHARDS] =
    [const { Mutex::new(BTreeMap::new()) }; SHARDS];

/// A rate is measured over at least this long: two page loads a moment apart would
/// otherwise show the bytes of a moment as a rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Waiting for, or reading, a request head (a keep-alive connection between requests too).
    ReadingHead,
    /// A CONNECT being routed, resolved and dialled.
    Connecting,
    /// A plain-HTTP request being forwarded.
    Forwarding,
    /// A tunnel: a CONNECT's after its `200`, or an upgraded connection's after its `101`.
    Tunnel,
    /// Answered; the close is lingering over what the client still sends.
    Draining,
}

impl State {
    const ALL: [State; 5] = [
        State::ReadingHead,
        State::Connecting,
        State::Forwarding,
        State::Tunnel,
        State::Draining,
    ];

    /// The name `/status.json` uses.
    pub fn name(self) -> &'static str {
        match self {
            State::ReadingHead => "reading-head",
            State::Connecting => "connecting",
            State::Forwarding => "forwarding",
            State::Tunnel => "tunnel",
            State::Draining => "draining",
        }
    }
}

/// Bytes a connection carried, as the tunnel or the forwarder counts them.
#[derive(Debug, Default)]
pub struct Counters {
    /// From the client: request heads, bodies, a tunnel's upstream direction.
    up: AtomicU64,
    /// To the client: response heads, bodies, a tunnel's downstream direction.
    down: AtomicU64,
}

impl Counters {
    pub const fn new() -> Counters {
        Counters {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    /// Adds bytes already counted elsewhere.
    #[inline]
    pub fn add(&self, up: u64, down: u64) {
        if up != 0 {
            self.up.fetch_add(up, Relaxed);
        }
        if down != 0 {
            self.down.fetch_add(down, Relaxed);
        }
    }

    /// `(up, down)`.
    pub fn get(&self) -> (u64, u64) {
        (self.up.load(Relaxed), self.down.load(Relaxed))
    }
}

/// What is learnt about a connection as it goes: written at state changes, never per byte.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// The authenticated proxy user.
    pub user: Option<String>,
    /// `host:port` as the client asked for it (a CONNECT target, a forwarded request's host).
    pub destination: Option<String>,
    /// The address connected to: the origin's, or the parent proxy's on a parent route.
    pub upstream: Option<SocketAddr>,
    /// `direct`, or a parent.
    pub route: Option<Route>,
    /// Requests read on the connection so far.
    pub requests: u64,
}

/// One open connection.
#[derive(Debug)]
pub struct Connection {
    /// `$connection`.
    pub id: u64,
    /// The client (the PROXY header's source behind a balancer).
    pub client: SocketAddr,
    started: Instant,
    state: AtomicU8,
    pub bytes: Counters,
    details: Mutex<Details>,
}

/// The byte counts of each connection at a page load, and the rate measured up to it: kept
/// here, not in the connection's entry, so that a connection nobody looks at pays nothing for
/// rates. Pruned to the open connections at each look.
static SAMPLES: Mutex<BTreeMap<u64, Sample>> = Mutex::new(BTreeMap::new());

/// The byte counts at a page load, and the rate measured up to it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    up: u64,
    down: u64,
    rate: (f64, f64),
}

impl Connection {
    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Relaxed);
    }

    pub fn state(&self) -> State {
        State::ALL[usize::from(self.state.load(Relaxed)).min(State::ALL.len() - 1)]
    }

    /// Changes what is known about the connection.
    pub fn update(&self, change: impl FnOnce(&mut Details)) {
        change(&mut lock(&self.details));
    }
}

/// A registered connection; dropping it removes the connection from the registry.
#[derive(Debug)]
pub struct Registered(Arc<Connection>);

impl Registered {
    /// Registers connection `id` from `client`, reading its first head.
    pub fn new(id: u64, client: SocketAddr) -> Registered {
        let started = Instant::now();
        let connection = Arc::new(Connection {
            id,
            client,
            started,
            state: AtomicU8::new(State::ReadingHead as u8),
            bytes: Counters::default(),
            details: Mutex::default(),
        });
        lock(shard(id)).insert(id, Arc::clone(&connection));
        Registered(connection)
    }
}

impl Deref for Registered {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(shard(self.0.id)).remove(&self.0.id);
    }
}

fn shard(id: u64) -> &'static Mutex<BTreeMap<u64, Arc<Connection>>> {
    &REGISTRY[(id % SHARDS as u64) as usize]
}

/// A poisoned lock only means a panic elsewhere; the data is plain values, still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `host:port` of a request to forward, as its client wrote it: the absolute-form target's
/// authority, or the `Host` field; `:80` when no port is written. Shown while the request is
/// forwarded (before the forwarder has parsed it).
pub fn destination_of(head: &Head) -> Option<String> {
    let (authority, port) = authority_of(head)?;
    Some(format!("{authority}{port}"))
}

/// The authority and the port suffix to append to it (`""` or `":80"`).
fn authority_of(head: &Head) -> Option<(&str, &'static str)> {
    let authority = match head.target.split_once("://") {
        Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or_default(),
        None => std::str::from_utf8(head.header("host")?).ok()?,
    };
    let authority = authority.rsplit('@').next().unwrap_or_default();
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    Some((authority, if has_port { "" } else { ":80" }))
}

impl Details {
    /// Notes the destination of a request about to be forwarded; a keep-alive connection to
    /// the same host (the usual case) allocates nothing.
    pub fn forwarding(&mut self, head: &Head) {
        let Some((authority, port)) = authority_of(head) else {
            self.destination = None;
            return;
        };
        let same = self.destination.as_deref().is_some_and(|known| {
            known.len() == authority.len() + port.len()
                && known.starts_with(authority)
                && known.ends_with(port)
        });
        if !same {
            self.destination = Some(format!("{authority}{port}"));
        }
    }

    /// Notes the route a request took.
    pub fn routed(&mut self, route: Option<&Route>) {
        if self.route.as_ref() != route {
            self.route = route.cloned();
        }
    }
}

/// One connection as the page shows it.
#[derive(Debug, Clone)]
pub struct View {
    pub id: u64,
    pub client: SocketAddr,
    pub details: Details,
    pub state: State,
    pub age: Duration,
    /// Seconds since the Unix epoch.
    pub started: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Bytes per second.
    pub rate_up: f64,
    pub rate_down: f64,
}

/// Every open connection, as of now, in no particular order.
pub fn snapshot() -> Vec<View> {
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut all: Vec<Arc<Connection>> = Vec::new();
    for shard in &REGISTRY {
        all.extend(lock(shard).values().cloned());
    }
    let mut samples = lock(&SAMPLES);
    let mut kept = BTreeMap::new();
    let views = all
        .iter()
        .map(|c| {
            let (bytes_up, bytes_down) = c.bytes.get();
            let age = now.saturating_duration_since(c.started);
            let sample = samples.remove(&c.id);
            let sample = rate(sample, now, age, (bytes_up, bytes_down));
            let (rate_up, rate_down) = sample.rate;
            kept.insert(c.id, sample);
            View {
                id: c.id,
                client: c.client,
                details: lock(&c.details).clone(),
                state: c.state(),
                age,
                started: unix_now - age.as_secs_f64(),
                bytes_up,
                bytes_down,
                rate_up,
                rate_down,
            }
        })
        .collect();
    // Connections that closed since the last look are forgotten.
    *samples = kept;
    views
}

/// The rate now: over the time since the previous sample if that is at least [`RATE_WINDOW`]
/// old (then `now` becomes the sample), since the connection started on its first look.
fn rate(previous: Option<Sample>, now: Instant, age: Duration, (up, down): (u64, u64)) -> Sample {
    let per_second = |bytes: u64, over: Duration| {
        if over.is_zero() {
            0.0
        } else {
            bytes as f64 / over.as_secs_f64()
        }
    };
    match previous {
        Some(sample) if now.saturating_duration_since(sample.at) < RATE_WINDOW => sample,
        Some(sample) => {
            let over = now.saturating_duration_since(sample.at);
            Sample {
                at: now,
                up,
                down,
                rate: (
                    per_second(up.saturating_sub(sample.up), over),
                    per_second(down.saturating_sub(sample.down), over),
                ),
            }
        }
        None => Sample {
            at: now,
            up,
            down,
            rate: (per_second(up, age), per_second(down, age)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_until_dropped_with_its_bytes_and_state() {
        let id = u64::MAX - 7;
        let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let registered = Registered::new(id, client);
        registered.bytes.add(10, 0);
        registered.bytes.add(5, 7);
        registered.set_state(State::Tunnel);
        registered.update(|d| d.destination = Some("example.org:443".into()));
        let view = snapshot().into_iter().find(|v| v.id == id).unwrap();
        assert_eq!((view.bytes_up, view.bytes_down), (15, 7));
        assert_eq!(view.state, State::Tunnel);
        assert_eq!(view.client, client);
        assert_eq!(view.details.destination.as_deref(), Some("example.org:443"));
        drop(registered);
        assert!(snapshot().iter().all(|v| v.id != id));
    }

    #[test]
    fn rates_over_a_second_or_more_between_looks() {
        let t0 = Instant::now();
        let first = rate(None, t0, Duration::from_secs(2), (1000, 4000));
        assert_eq!(first.rate, (500.0, 2000.0), "the average since the start");
        let soon = rate(
            Some(first),
            t0 + Duration::from_millis(300),
            Duration::ZERO,
            (9999, 0),
        );
        assert_eq!(soon.rate, first.rate, "too soon: the last rate stands");
        let later = rate(
            Some(first),
            t0 + Duration::from_secs(2),
            Duration::ZERO,
            (3000, 4000),
        );
        assert_eq!(later.rate, (1000.0, 0.0));
        assert_eq!((later.up, later.down), (3000, 4000));
    }

    #[test]
    fn destination_of_a_request_to_forward() {
        let of = |text: &str| {
            let head = crate::request::parse_head(text.as_bytes(), Default::default()).unwrap();
            destination_of(&head)
        };
        assert_eq!(
            of("GET http://u:p@example.org/x HTTP/1.1\r\n\r\n").as_deref(),
            Some("example.org:80")
        );
        assert_eq!(
            of("GET http://[::1]:8080?q HTTP/1.1\r\n\r\n").as_deref(),
            Some("[::1]:8080")
        );
        assert_eq!(
            of("GET / HTTP/1.1\r\nHost: a.example:81\r\n\r\n").as_deref(),
            Some("a.example:81")
        );
        assert_eq!(of("GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn a_keep_alive_connection_follows_its_requests() {
        let head = |text: &str| crate::request::parse_head(text.as_bytes(), Default::default());
        let mut details = Details::default();
        details.forwarding(&head("GET http://a.example/ HTTP/1.1\r\n\r\n").unwrap());
        assert_eq!(details.destination.as_deref(), Some("a.example:80"));
        details.forwarding(&head("GET http://a.example:80/x HTTP/1.1\r\n\r\n").unwrap());
        assert_eq!(details.destination.as_deref(), Some("a.example:80"));
        details.forwarding(&head("GET http://b.example:8080/ HTTP/1.1\r\n\r\n").unwrap());
        assert_eq!(details.destination.as_deref(), Some("b.example:8080"));
        details.routed(Some(&Route::Direct));
        assert_eq!(details.route, Some(Route::Direct));
    }
}
