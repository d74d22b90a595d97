//! Process-wide counters, and their Prometheus text exposition (format 0.0.4).
//!
//! One static [`Metrics`] of atomics, updated with `Relaxed` ordering: counters need no
//! ordering with anything else, and a scrape that sees one counter a moment ahead of another
//! is harmless. Nothing is counted per byte: byte totals are added once per request, and once
//! per tunnel when it ends.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, Weak};
use std::time::Duration;

/// Every counter and gauge sluice exposes.
#[derive(Default)]
pub struct Metrics {
    connections_open: Gauge,
    connections_total: Counter,
    tunnels_open: Gauge,
    tunnels_total: Counter,
    /// Requests by status class, 1xx to 5xx.
    requests: [Counter; 5],
    /// `[tunnel, forward] × [up, down]`.
    bytes: [[Counter; 2]; 2],
    dns_lookups: Counter,
    dns_cache_hits: Counter,
    dns_failures: [Counter; DnsFailure::ALL.len()],
    dns_seconds: Histogram,
    connect_failures: [Counter; ConnectFailure::ALL.len()],
    refused: [Counter; Refusal::ALL.len()],
    access_log_dropped: Counter,
    http2_connections_total: Counter,
    http2_streams_open: Gauge,
    http2_streams_total: Counter,
    /// HTTP/2 connections closed with ENHANCE_YOUR_CALM (a flood of resets or control frames).
    http2_floods_total: Counter,
    tls_handshakes: Counter,
    tls_handshake_failures: [Counter; TlsFailure::ALL.len()],
    /// Parent proxies by name, from the first request routed through each.
    parents: Mutex<BTreeMap<String, ParentStats>>,
    /// Bytes that moved only after waiting for a bandwidth limit.
    delayed: Counter,
    /// Requests a destination rule would have denied, served under `destination_mode report`.
    would_deny: Counter,
    /// The users named in `users` blocks, the only ones counted apart: a bounded set.
    users: Mutex<BTreeMap<String, UserStats>>,
}

/// One named user's counters.
#[derive(Default)]
struct UserStats {
    /// Named in the configuration now in use: only those are counted and shown.
    named: bool,
    requests: u64,
    /// Up, down.
    bytes: [u64; 2],
    delayed: u64,
    would_deny: u64,
}

static METRICS: Metrics = Metrics::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// A few counters read together: the status page's totals.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub tunnels_open: u64,
    pub tunnels_opened: u64,
    /// Requests answered, tunnels included (counted when they end).
    pub requests: u64,
    /// From clients, over ended requests and tunnels.
    pub bytes_up: u64,
    /// To clients, over ended requests and tunnels.
    pub bytes_down: u64,
}

/// What a byte count belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A CONNECT tunnel, or a connection upgraded (WebSocket) after a forwarded request.
    Tunnel,
    /// A forwarded plain-HTTP request.
    Forward,
}

/// Why a DNS query failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFailure {
    NxDomain,
    Timeout,
    Error,
}

impl DnsFailure {
    const ALL: [DnsFailure; 3] = [DnsFailure::NxDomain, DnsFailure::Timeout, DnsFailure::Error];

    fn label(self) -> &'static str {
        match self {
            DnsFailure::NxDomain => "nxdomain",
            DnsFailure::Timeout => "timeout",
            DnsFailure::Error => "error",
        }
    }
}

/// Why connecting to an upstream failed ([`crate::error::ProxyError::class`] says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Unreachable,
    /// Every address was refused by a destination rule.
    Denied,
}

impl ConnectFailure {
    const ALL: [ConnectFailure; 4] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Unreachable,
        ConnectFailure::Denied,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::Denied => "denied",
        }
    }
}

/// Why a client was refused by policy or a limit ([`crate::error::ProxyError::class`] says
/// which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections`, `max_connections_per_client` (503).
    Limit,
    /// `allow` / `deny` (403).
    Acl,
    /// `auth_basic` (407).
    Auth,
    /// A destination rule or the built-in ones (403).
    Destination,
    /// `proxy_connect_allow` / `proxy_http_allow` (403).
    Port,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Limit,
        Refusal::Acl,
        Refusal::Auth,
        Refusal::Destination,
        Refusal::Port,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Acl => "acl",
            Refusal::Auth => "auth",
            Refusal::Destination => "destination",
            Refusal::Port => "port",
        }
    }
}

/// Why a TLS handshake with a client failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// `ssl_handshake_timeout` passed.
    Timeout,
    /// The client spoke plain HTTP to the TLS port (answered `400`).
    PlainHttp,
    /// The client sent no certificate where one is required, or one that did not verify.
    ClientCertificate,
    /// The client gave up with an alert (typically: it does not trust the certificate).
    Alert,
    /// Anything else: not TLS, no common protocol or cipher, a broken message, a reset.
    Protocol,
}

impl TlsFailure {
    const ALL: [TlsFailure; 5] = [
        TlsFailure::Timeout,
        TlsFailure::PlainHttp,
        TlsFailure::ClientCertificate,
        TlsFailure::Alert,
        TlsFailure::Protocol,
    ];

    fn label(self) -> &'static str {
        match self {
            TlsFailure::Timeout => "timeout",
            TlsFailure::PlainHttp => "plain_http",
            TlsFailure::ClientCertificate => "client_certificate",
            TlsFailure::Alert => "alert",
            TlsFailure::Protocol => "protocol",
        }
    }
}

/// A parent proxy's servers as the metrics see them (`sluice_parent_servers_up`).
pub trait Peers: Send + Sync {
    /// Servers not taken out by `max_fails` now.
    fn servers_up(&self) -> usize;
}

/// Why a parent proxy's server was not used, or the parent did not grant a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentFailure {
    /// The server refused the connection.
    Refused,
    /// Connecting, or the answer to CONNECT, took too long.
    Timeout,
    /// Anything else that made the server unusable (unreachable, a broken answer).
    Error,
    /// The parent answered a CONNECT with a non-2xx status.
    Rejected,
}

impl ParentFailure {
    const ALL: [ParentFailure; 4] = [
        ParentFailure::Refused,
        ParentFailure::Timeout,
        ParentFailure::Error,
        ParentFailure::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            ParentFailure::Refused => "refused",
            ParentFailure::Timeout => "timeout",
            ParentFailure::Error => "error",
            ParentFailure::Rejected => "rejected",
        }
    }
}

/// One parent proxy's counters; its servers are asked how many are up when scraped.
#[derive(Default)]
struct ParentStats {
    requests: u64,
    failures: [u64; ParentFailure::ALL.len()],
    peers: Option<Weak<dyn Peers>>,
}

/// Holds a place in a gauge until dropped.
#[derive(Debug)]
pub struct Open(&'static Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            connections_open: Gauge::new(),
            connections_total: Counter::new(),
            tunnels_open: Gauge::new(),
            tunnels_total: Counter::new(),
            requests: [const { Counter::new() }; 5],
            bytes: [const { [const { Counter::new() }; 2] }; 2],
            dns_lookups: Counter::new(),
            dns_cache_hits: Counter::new(),
            dns_failures: [const { Counter::new() }; DnsFailure::ALL.len()],
            dns_seconds: Histogram::new(),
            connect_failures: [const { Counter::new() }; ConnectFailure::ALL.len()],
            refused: [const { Counter::new() }; Refusal::ALL.len()],
            access_log_dropped: Counter::new(),
            http2_connections_total: Counter::new(),
            http2_streams_open: Gauge::new(),
            http2_streams_total: Counter::new(),
            http2_floods_total: Counter::new(),
            tls_handshakes: Counter::new(),
            tls_handshake_failures: [const { Counter::new() }; TlsFailure::ALL.len()],
            parents: Mutex::new(BTreeMap::new()),
            delayed: Counter::new(),
            would_deny: Counter::new(),
            users: Mutex::new(BTreeMap::new()),
        }
    }

    fn users(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, UserStats>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The users counted apart from now on: those named in `users` blocks of the configuration
    /// in use. Counts of users no longer named are dropped, so the set stays bounded.
    pub fn name_users<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut users = self.users();
        users.values_mut().for_each(|stats| stats.named = false);
        for name in names {
            users.entry(name.to_string()).or_default().named = true;
        }
        users.retain(|_, stats| stats.named);
    }

    /// Runs `count` on `user`'s counters if the user is counted apart.
    fn for_user(&self, user: Option<&str>, count: impl FnOnce(&mut UserStats)) {
        if let Some(user) = user
            && let Some(stats) = self.users().get_mut(user)
        {
            count(stats);
        }
    }

    /// `bytes` moved only after waiting for a bandwidth limit, on a connection of `user`.
    pub fn delayed(&self, user: Option<&str>, bytes: u64) {
        self.delayed.add(bytes);
        self.for_user(user, |stats| stats.delayed += bytes);
    }

    /// A request a destination rule would deny was served (`destination_mode report`).
    pub fn would_deny(&self, user: Option<&str>) {
        self.would_deny.add(1);
        self.for_user(user, |stats| stats.would_deny += 1);
    }

    /// A request of `user` ended: counted apart if the user is named in a `users` block.
    pub fn user_request(&self, user: Option<&str>, up: u64, down: u64) {
        self.for_user(user, |stats| {
            stats.requests += 1;
            stats.bytes[0] += up;
            stats.bytes[1] += down;
        });
    }

    fn parents(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ParentStats>> {
        self.parents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request was routed through the parent `name`, whose servers are `peers` (the ones
    /// of the configuration in use: a reload replaces them).
    pub fn parent_request(&self, name: &str, peers: Weak<dyn Peers>) {
        let mut parents = self.parents();
        let stats = parents.entry(name.to_string()).or_default();
        stats.requests += 1;
        stats.peers = Some(peers);
    }

    /// A server of the parent `name` failed, or the parent refused a tunnel.
    pub fn parent_failed(&self, name: &str, cause: ParentFailure) {
        let mut parents = self.parents();
        parents.entry(name.to_string()).or_default().failures[cause as usize] += 1;
    }

    /// A client connection was accepted; it counts as open until the result is dropped.
    pub fn connection(&'static self) -> Open {
        self.connections_total.add(1);
        self.connections_open.0.fetch_add(1, Relaxed);
        Open(&self.connections_open)
    }

    /// A tunnel started; it counts as open until the result is dropped.
    pub fn tunnel(&'static self) -> Open {
        self.tunnels_total.add(1);
        self.tunnels_open.0.fetch_add(1, Relaxed);
        Open(&self.tunnels_open)
    }

    /// A client connection turned out to speak HTTP/2.
    pub fn http2_connection(&self) {
        self.http2_connections_total.add(1);
    }

    /// An HTTP/2 stream was accepted; it counts as open until the result is dropped.
    pub fn http2_stream(&'static self) -> Open {
        self.http2_streams_total.add(1);
        self.http2_streams_open.0.fetch_add(1, Relaxed);
        Open(&self.http2_streams_open)
    }

    /// An HTTP/2 connection was closed for flooding (ENHANCE_YOUR_CALM).
    pub fn http2_flood(&self) {
        self.http2_floods_total.add(1);
    }

    /// A request ended with `status`; `up` bytes came from the client, `down` went to it.
    /// Error answers count by status but not in the byte totals.
    pub fn request(&self, status: u16, mode: Option<Mode>, up: u64, down: u64) {
        if let Some(class) = (status / 100).checked_sub(1).filter(|&c| c < 5) {
            self.requests[usize::from(class)].add(1);
        }
        if let Some(mode) = mode {
            let bytes = &self.bytes[mode as usize];
            bytes[0].add(up);
            bytes[1].add(down);
        }
    }

    /// A DNS query (a cache miss) finished after `took`, failing for `failure` if it did.
    pub fn dns_lookup(&self, took: Duration, failure: Option<DnsFailure>) {
        self.dns_lookups.add(1);
        self.dns_seconds.observe(took);
        if let Some(failure) = failure {
            self.dns_failures[failure as usize].add(1);
        }
    }

    /// A lookup was answered without a query: from the cache, or by joining one in progress.
    pub fn dns_cache_hit(&self) {
        self.dns_cache_hits.add(1);
    }

    pub fn connect_failed(&self, cause: ConnectFailure) {
        self.connect_failures[cause as usize].add(1);
    }

    pub fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].add(1);
    }

    /// A TLS handshake with a client finished, or failed for `failure`.
    pub fn tls_handshake(&self, failure: Option<TlsFailure>) {
        match failure {
            None => self.tls_handshakes.add(1),
            Some(failure) => self.tls_handshake_failures[failure as usize].add(1),
        }
    }

    pub fn access_log_dropped(&self) {
        self.access_log_dropped.add(1);
    }

    /// Access log lines dropped so far.
    pub fn access_log_dropped_total(&self) -> u64 {
        self.access_log_dropped.get()
    }

    /// The process's totals, for the status page.
    pub fn totals(&self) -> Totals {
        let sum = |i: usize| self.bytes[0][i].get() + self.bytes[1][i].get();
        Totals {
            connections_open: self.connections_open.get(),
            connections_accepted: self.connections_total.get(),
            tunnels_open: self.tunnels_open.get(),
            tunnels_opened: self.tunnels_total.get(),
            requests: self.requests.iter().map(Counter::get).sum(),
            bytes_up: sum(0),
            bytes_down: sum(1),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let out = &mut out;
        header(
            out,
            "sluice_build_info",
            "gauge",
            "The running version: always 1.",
        );
        let _ = writeln!(
            out,
            "sluice_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let simple: [(&str, &str, &str, u64); 14] = [
            (
                "sluice_connections_open",
                "gauge",
                "Client connections open now.",
                self.connections_open.get(),
            ),
            (
                "sluice_connections_accepted_total",
                "counter",
                "Client connections accepted (those refused at accept by a limit are not counted).",
                self.connections_total.get(),
            ),
            (
                "sluice_tunnels_open",
                "gauge",
                "Tunnels open now (CONNECT and upgraded connections).",
                self.tunnels_open.get(),
            ),
            (
                "sluice_tunnels_total",
                "counter",
                "Tunnels opened (CONNECT and upgraded connections).",
                self.tunnels_total.get(),
            ),
            (
                "sluice_dns_lookups_total",
                "counter",
                "DNS queries sent (cache misses), one per address family.",
                self.dns_lookups.get(),
            ),
            (
                "sluice_dns_cache_hits_total",
                "counter",
                "Lookups answered without a query: from the cache or by a query in progress.",
                self.dns_cache_hits.get(),
            ),
            (
                "sluice_access_log_dropped_total",
                "counter",
                "Access log lines dropped because the writer fell behind.",
                self.access_log_dropped.get(),
            ),
            (
                "sluice_http2_connections_total",
                "counter",
                "Client connections that spoke HTTP/2.",
                self.http2_connections_total.get(),
            ),
            (
                "sluice_http2_streams_open",
                "gauge",
                "HTTP/2 streams open now (each a CONNECT tunnel or a forwarded request).",
                self.http2_streams_open.get(),
            ),
            (
                "sluice_http2_streams_total",
                "counter",
                "HTTP/2 streams accepted.",
                self.http2_streams_total.get(),
            ),
            (
                "sluice_http2_floods_total",
                "counter",
                "HTTP/2 connections closed with ENHANCE_YOUR_CALM (too many resets or control frames).",
                self.http2_floods_total.get(),
            ),
            (
                "sluice_tls_handshakes_total",
                "counter",
                "TLS handshakes with clients that succeeded (ssl listeners).",
                self.tls_handshakes.get(),
            ),
            (
                "sluice_limit_delayed_bytes_total",
                "counter",
                "Bytes that moved only after waiting for a bandwidth limit (limit_rate*); a tunnel counts when it ends.",
                self.delayed.get(),
            ),
            (
                "sluice_destination_would_deny_total",
                "counter",
                "Requests served that a destination rule would deny (destination_mode report).",
                self.would_deny.get(),
            ),
        ];
        for (name, kind, help, value) in simple {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        labelled(
            out,
            "sluice_http_requests_total",
            "Requests answered, by status class; a tunnel counts when it ends.",
            ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .zip(&self.requests)
                .map(|(class, c)| (format!("class=\"{class}\""), c.get())),
        );
        let mut bytes = Vec::new();
        for (mode, counters) in ["tunnel", "forward"].iter().zip(&self.bytes) {
            for (direction, c) in ["up", "down"].iter().zip(counters) {
                bytes.push((
                    format!("mode=\"{mode}\",direction=\"{direction}\""),
                    c.get(),
                ));
            }
        }
        labelled(
            out,
            "sluice_bytes_total",
            "Bytes from clients (up) and to clients (down), heads included; a tunnel counts when it ends.",
            bytes,
        );
        labelled(
            out,
            "sluice_dns_failures_total",
            "DNS queries that failed, by kind.",
            DnsFailure::ALL.iter().map(|f| {
                (
                    format!("kind=\"{}\"", f.label()),
                    self.dns_failures[*f as usize].get(),
                )
            }),
        );
        labelled(
            out,
            "sluice_upstream_connect_failures_total",
            "Upstream connections that could not be made, by cause.",
            ConnectFailure::ALL.iter().map(|f| {
                (
                    format!("cause=\"{}\"", f.label()),
                    self.connect_failures[*f as usize].get(),
                )
            }),
        );
        labelled(
            out,
            "sluice_refused_total",
            "Requests and connections refused by policy or a limit, by reason.",
            Refusal::ALL.iter().map(|r| {
                (
                    format!("reason=\"{}\"", r.label()),
                    self.refused[*r as usize].get(),
                )
            }),
        );
        labelled(
            out,
            "sluice_tls_handshake_failures_total",
            "TLS handshakes with clients that failed, by reason.",
            TlsFailure::ALL.iter().map(|f| {
                (
                    format!("reason=\"{}\"", f.label()),
                    self.tls_handshake_failures[*f as usize].get(),
                )
            }),
        );
        self.dns_seconds.render(
            out,
            "sluice_dns_lookup_seconds",
            "How long DNS queries took.",
        );
        self.render_parents(out);
        self.render_users(out);
        std::mem::take(out)
    }
}

impl Metrics {
    /// The named users' families, when a `users` block names any.
    fn render_users(&self, out: &mut String) {
        let users = self.users();
        if users.is_empty() {
            return;
        }
        let label = |name: &str| format!("user=\"{}\"", escape_label(name));
        labelled(
            out,
            "sluice_user_requests_total",
            "Requests (a tunnel when it ends) of each user named in a users block.",
            users.iter().map(|(name, s)| (label(name), s.requests)),
        );
        labelled(
            out,
            "sluice_user_bytes_total",
            "Bytes from (up) and to (down) each user named in a users block.",
            users.iter().flat_map(|(name, s)| {
                ["up", "down"]
                    .iter()
                    .zip(s.bytes)
                    .map(move |(direction, n)| {
                        (format!("{},direction=\"{direction}\"", label(name)), n)
                    })
            }),
        );
        labelled(
            out,
            "sluice_user_limit_delayed_bytes_total",
            "Bytes of each user named in a users block that waited for a bandwidth limit.",
            users.iter().map(|(name, s)| (label(name), s.delayed)),
        );
        labelled(
            out,
            "sluice_user_destination_would_deny_total",
            "Requests of each user named in a users block that a destination rule would deny (report mode).",
            users.iter().map(|(name, s)| (label(name), s.would_deny)),
        );
    }

    /// The parent proxies' families, once a request went through one.
    fn render_parents(&self, out: &mut String) {
        let parents = self.parents();
        if parents.is_empty() {
            return;
        }
        let label = |name: &str| {
            let escaped = name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("parent=\"{escaped}\"")
        };
        labelled(
            out,
            "sluice_parent_requests_total",
            "Requests routed through each parent proxy.",
            parents.iter().map(|(name, s)| (label(name), s.requests)),
        );
        labelled(
            out,
            "sluice_parent_failures_total",
            "Parent proxy servers that failed a request, and tunnels a parent refused, by cause.",
            parents.iter().flat_map(|(name, s)| {
                ParentFailure::ALL.iter().map(move |f| {
                    (
                        format!("{},cause=\"{}\"", label(name), f.label()),
                        s.failures[*f as usize],
                    )
                })
            }),
        );
        let name = "sluice_parent_servers_up";
        header(
            out,
            name,
            "gauge",
            "Servers of each parent proxy not taken out by max_fails.",
        );
        for (parent, stats) in parents.iter() {
            let up = stats.peers.as_ref().and_then(Weak::upgrade);
            let up = up.map_or(0, |peers| peers.servers_up());
            let _ = writeln!(out, "{name}{{{}}} {up}", label(parent));
        }
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// A label value as Prometheus writes it: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A counter family with one label set per line.
fn labelled(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (String, u64)>,
) {
    header(out, name, "counter", help);
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
struct Gauge(AtomicU64);

impl Gauge {
    const fn new() -> Gauge {
        Gauge(AtomicU64::new(0))
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds of the DNS latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram: per-bucket counts (made cumulative when rendered, so `+Inf` always
/// equals `_count`) and the sum in microseconds.
#[derive(Default)]
struct Histogram {
    /// One per bound in [`BUCKETS`], then `+Inf`.
    counts: [Counter; BUCKETS.len() + 1],
    sum_micros: Counter,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            counts: [const { Counter::new() }; BUCKETS.len() + 1],
            sum_micros: Counter::new(),
        }
    }

    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].add(1);
        self.sum_micros
            .add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.get();
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.get() as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let h = Histogram::new();
        for ms in [0, 2, 2, 40, 7000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.0025\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.05\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_sum 7.044\n"), "{out}");
        assert!(out.ends_with("x_count 5\n"), "{out}");
    }

    #[test]
    fn status_classes() {
        let m = Metrics::new();
        m.request(204, Some(Mode::Forward), 10, 20);
        m.request(407, None, 5, 5);
        m.request(99, None, 0, 0);
        assert_eq!(m.requests[1].get(), 1);
        assert_eq!(m.requests[3].get(), 1);
        assert_eq!(m.bytes[Mode::Forward as usize][0].get(), 10);
        assert_eq!(m.bytes[Mode::Forward as usize][1].get(), 20);
        assert_eq!(m.bytes[Mode::Tunnel as usize][1].get(), 0);
    }
}
