//! Host names to addresses: hickory-resolver underneath, sluice's own cache, coalescing and
//! name-server failover on top.
//!
//! One [`Resolver`] per `server` block. With a `resolver` directive it asks exactly those name
//! servers, in the order written, and never reads `/etc/hosts` (as nginx does); without one it
//! follows the system configuration (`/etc/resolv.conf`, with `/etc/hosts` answering first).
//!
//! What hickory does and what is done here (measured against the tests' DNS server):
//!
//! - hickory is the transport: it builds and checks the queries, picks random ports and ids,
//!   retransmits over UDP, falls back to TCP on truncation and follows CNAMEs.
//! - Its cache is switched off. It keeps a negative answer only when the answer carries an
//!   SOA, `valid=` could only bound positive answers, and it never remembers a failure; the
//!   cache here keeps positive and negative answers with the bounds below, and failures for a
//!   second.
//! - Its own coalescing of identical in-flight queries leaves a window between the end of a
//!   query and the cache insert in which a second query goes out; here the answer enters the
//!   cache and leaves the in-flight table under one lock.
//! - Its name-server pool either asks the first two servers in parallel every time, or (one
//!   at a time) never gets past a first server that does not answer. Here servers are asked
//!   in order: the next one a moment later if the first is silent, at once if it fails.
//! - Its `lookup_ip` waits for both A and AAAA, so a server that drops AAAA queries costs the
//!   whole `resolver_timeout`. Here each family is its own lookup, and once one has addresses
//!   the other gets [`FAMILY_GRACE`] more.
//!
//! Every lookup of one family of one name runs once, in its own task, bounded by
//! `resolver_timeout`; every connection that wants it waits for the same answer.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

pub mod settings;

pub use settings::ResolverSettings;

use crate::deadline;
use crate::error::ProxyError;
use crate::metrics::{self, DnsFailure};
use crate::target::{Host, Target};

/// Answers kept per resolver; one entry is one address family of one name.
const CACHE_ENTRIES: usize = 4096;
/// Distinct lookups in progress per resolver. Each holds a few UDP sockets for up to
/// `resolver_timeout`, and outlives the client that asked for it; past this, new names fail
/// at once instead of exhausting file descriptors while the name servers are down.
const MAX_PENDING: usize = 512;
/// Addresses kept per family of a name; a longer answer is cut.
const MAX_ADDRS: usize = 32;
/// Bounds on how long a positive answer is kept when `valid=` does not say.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// A negative answer (NXDOMAIN, or no record of the type) is kept for its SOA's negative TTL
/// within these bounds (capped further by `valid=`), or [`NEGATIVE_TTL`] without an SOA.
const MIN_NEGATIVE_TTL: Duration = Duration::from_secs(1);
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(60);
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// A failure (SERVFAIL, REFUSED, no answer in time) is remembered this long, so a broken name
/// is not asked for again by every connection (RFC 9520).
const FAILURE_TTL: Duration = Duration::from_secs(1);
/// Once one address family has addresses, how long the other may still take.
pub const FAMILY_GRACE: Duration = Duration::from_millis(500);
/// Longest wait for a silent name server before the next one is asked too.
const FAILOVER_STEP: Duration = Duration::from_secs(1);
/// Longest one query to one name server may take (hickory retransmits within it).
const TRY_TIMEOUT: Duration = Duration::from_secs(5);

/// An address family, in the order answers are used: IPv4 first, as nginx orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn record_type(self) -> RecordType {
        match self {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// What one lookup of one family of one name found.
#[derive(Debug, Clone)]
enum Answer {
    Addrs(Arc<[IpAddr]>),
    /// NXDOMAIN: the name does not exist, in any family.
    NoName,
    /// The name exists without an address of this family.
    NoData,
    /// The name servers answered with an error, or could not be reached.
    Failed(Arc<str>),
    /// No answer within `resolver_timeout`.
    TimedOut,
}

impl Answer {
    /// How the metrics count a failed query; a name without addresses of one family is no
    /// failure.
    fn failure(&self) -> Option<DnsFailure> {
        match self {
            Answer::Addrs(_) | Answer::NoData => None,
            Answer::NoName => Some(DnsFailure::NxDomain),
            Answer::TimedOut => Some(DnsFailure::Timeout),
            Answer::Failed(_) => Some(DnsFailure::Error),
        }
    }

    /// An answer that settles the question: no other name server needs to be asked.
    fn is_definitive(&self) -> bool {
        matches!(self, Answer::Addrs(_) | Answer::NoName | Answer::NoData)
    }
}

/// An answer with the TTL the name server gave it (record TTL or SOA negative TTL).
struct Reply {
    answer: Answer,
    ttl: Option<u32>,
}

impl Reply {
    fn of(answer: Answer) -> Reply {
        Reply { answer, ttl: None }
    }
}

type Key = (Arc<str>, Family);

/// Resolves CONNECT and forwarding targets for one server block.
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    name_servers: NameServers,
    /// `resolver_timeout`.
    timeout: Duration,
    /// `valid=`.
    valid: Option<Duration>,
    /// The families asked for, in the order their addresses are used.
    families: Vec<Family>,
    state: Mutex<State>,
}

/// Who is asked.
enum NameServers {
    /// `resolver ADDRESS ...`: each name server on its own, asked in order.
    Servers(Vec<NameServer>),
    /// The system configuration: `/etc/hosts` first, then hickory with `/etc/resolv.conf`.
    System(Box<SystemResolver>),
}

/// hickory with `/etc/resolv.conf`, behind the entries of `/etc/hosts`.
struct SystemResolver {
    dns: TokioResolver,
    hosts: Hosts,
}

struct NameServer {
    addr: SocketAddr,
    dns: TokioResolver,
}

#[derive(Default)]
struct State {
    cache: Cache,
    /// Lookups in progress; each receiver sees `Some(answer)` once its lookup is done.
    pending: HashMap<Key, watch::Receiver<Option<Answer>>>,
}

/// One family's answer: known now, or coming from a lookup in progress.
enum Pending {
    Ready(Answer),
    Waiting(watch::Receiver<Option<Answer>>),
}

impl Resolver {
    /// Builds the resolver a server block asks for. Fails only if the system configuration is
    /// needed and cannot be read.
    pub fn new(settings: Option<&ResolverSettings>, timeout: Duration) -> Result<Resolver, String> {
        let (name_servers, valid, families) = match settings {
            Some(settings) => {
                let try_timeout = timeout.min(TRY_TIMEOUT);
                let servers = settings
                    .servers
                    .iter()
                    .map(|&addr| {
                        Ok(NameServer {
                            addr,
                            dns: one_server(addr, try_timeout)?,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let mut families = Vec::new();
                if settings.ipv4 {
                    families.push(Family::V4);
                }
                if settings.ipv6 {
                    families.push(Family::V6);
                }
                (NameServers::Servers(servers), settings.valid, families)
            }
            None => {
                let mut builder = TokioResolver::builder(TokioRuntimeProvider::default())
                    .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?;
                let options = builder.options_mut();
                options.cache_size = 0;
                options.use_hosts_file = ResolveHosts::Never;
                let dns = builder
                    .build()
                    .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?;
                let hosts = Hosts::from_system().unwrap_or_default();
                let name_servers = NameServers::System(Box::new(SystemResolver { dns, hosts }));
                (name_servers, None, vec![Family::V4, Family::V6])
            }
        };
        Ok(Resolver {
            inner: Arc::new(Inner {
                name_servers,
                timeout,
                valid,
                families,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The addresses to dial for `target`, in the order to try them: IPv4 first, then IPv6.
    /// A name that does not resolve within `resolver_timeout` is a `504`; one that does not
    /// exist or has no usable address is a `502`.
    pub async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, ProxyError> {
        let name = match &target.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, target.port)]),
            Host::Name(name) => name,
        };
        // A literal with a trailing dot is still a literal: no query for it.
        if let Ok(ip) = name.strip_suffix('.').unwrap_or(name).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, target.port)]);
        }
        let started = Instant::now();
        let deadline = deadline::after(started, self.inner.timeout);
        let key: Arc<str> = Arc::from(name.as_str());
        let pending: Vec<(Family, Pending)> = self
            .inner
            .families
            .iter()
            .map(|&family| (family, Inner::lookup(&self.inner, &key, family)))
            .collect();
        let cached = pending.iter().all(|(_, p)| matches!(p, Pending::Ready(_)));
        let answers = gather(pending, deadline).await;
        let result = self.inner.combine(name, &answers, target.port);
        let elapsed = started.elapsed();
        let source = if cached { "cache" } else { "DNS" };
        match &result {
            Ok(addrs) => log::debug!(
                "resolved \"{name}\" in {elapsed:?} ({source}): {}",
                addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(error) => {
                log::debug!("resolving \"{name}\" failed in {elapsed:?} ({source}): {error}")
            }
        }
        result
    }
}

impl Inner {
    /// The answer for one family of `name`: from the cache, from a lookup already in progress,
    /// or from a new lookup started here.
    fn lookup(this: &Arc<Inner>, name: &Arc<str>, family: Family) -> Pending {
        let key: Key = (Arc::clone(name), family);
        let mut state = this.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(answer) = state.cache.get(&key, Instant::now()) {
            metrics::get().dns_cache_hit();
            return Pending::Ready(answer);
        }
        if let Some(waiting) = state.pending.get(&key) {
            metrics::get().dns_cache_hit();
            return Pending::Waiting(waiting.clone());
        }
        if state.pending.len() >= MAX_PENDING {
            return Pending::Ready(Answer::Failed("too many DNS lookups in progress".into()));
        }
        let (done, waiting) = watch::channel(None);
        state.pending.insert(key.clone(), waiting.clone());
        drop(state);
        let inner = Arc::clone(this);
        tokio::spawn(async move {
            // Leaves the in-flight table even if the query panics, so the name is not stuck.
            let mut guard = PendingGuard {
                inner: &inner,
                key: Some(key),
            };
            let started = Instant::now();
            let reply = tokio::time::timeout(inner.timeout, inner.query(&guard.key_name(), family))
                .await
                .unwrap_or_else(|_| Reply::of(Answer::TimedOut));
            metrics::get().dns_lookup(started.elapsed(), reply.answer.failure());
            let key = guard.key.take().expect("the key is taken once");
            let lifetime = inner.lifetime(&reply);
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            // Into the cache and out of the in-flight table at once: a lookup arriving now
            // finds one or the other, never neither.
            state.cache.insert(
                key.clone(),
                reply.answer.clone(),
                deadline::from_now(lifetime),
            );
            state.pending.remove(&key);
            drop(state);
            let _ = done.send(Some(reply.answer));
        });
        Pending::Waiting(waiting)
    }

    /// Asks the name servers about one family of `name`.
    async fn query(&self, name: &str, family: Family) -> Reply {
        let rtype = family.record_type();
        match &self.name_servers {
            NameServers::Servers(servers) => {
                let Ok(mut fqdn) = Name::from_ascii(name) else {
                    return Reply::of(Answer::Failed("invalid host name".into()));
                };
                // Only the name as written is asked: no search domains.
                fqdn.set_fqdn(true);
                let try_timeout = self.timeout.min(TRY_TIMEOUT);
                ask_in_order(servers, &fqdn, rtype, self.timeout, try_timeout).await
            }
            NameServers::System(system) => {
                let SystemResolver { dns, hosts } = &**system;
                let Ok(hostname) = Name::from_ascii(name) else {
                    return Reply::of(Answer::Failed("invalid host name".into()));
                };
                // A name in /etc/hosts is answered by it alone, in both families, as the C
                // library does: no DNS query for the family the file does not list.
                let mut in_hosts = false;
                for f in [Family::V4, Family::V6] {
                    let listed =
                        hosts.lookup_static_host(&Query::query(hostname.clone(), f.record_type()));
                    if let Some(lookup) = listed {
                        in_hosts = true;
                        if f == family {
                            return reply_of(Ok(lookup), family);
                        }
                    }
                }
                if in_hosts {
                    return Reply::of(Answer::NoData);
                }
                reply_of(dns.lookup(hostname, rtype).await, family)
            }
        }
    }

    /// How long an answer stays in the cache.
    fn lifetime(&self, reply: &Reply) -> Duration {
        let ttl = reply.ttl.map(|t| Duration::from_secs(u64::from(t)));
        match reply.answer {
            Answer::Addrs(_) => self
                .valid
                .unwrap_or_else(|| ttl.unwrap_or(MIN_TTL).clamp(MIN_TTL, MAX_TTL)),
            Answer::NoName | Answer::NoData => {
                let negative = ttl
                    .unwrap_or(NEGATIVE_TTL)
                    .clamp(MIN_NEGATIVE_TTL, MAX_NEGATIVE_TTL);
                self.valid.map_or(negative, |valid| negative.min(valid))
            }
            Answer::Failed(_) | Answer::TimedOut => FAILURE_TTL,
        }
    }

    /// The addresses of every family, in order, or the error that explains why there are none.
    fn combine(
        &self,
        name: &str,
        answers: &[(Family, Answer)],
        port: u16,
    ) -> Result<Vec<SocketAddr>, ProxyError> {
        let addrs: Vec<SocketAddr> = answers
            .iter()
            .filter_map(|(_, answer)| match answer {
                Answer::Addrs(ips) => Some(ips.iter().map(|&ip| SocketAddr::new(ip, port))),
                _ => None,
            })
            .flatten()
            .collect();
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        let failed = |reason: String| ProxyError::ResolveFailed {
            host: name.to_string(),
            reason,
        };
        // NXDOMAIN is about the name, whatever the other family's lookup did.
        if answers.iter().any(|(_, a)| matches!(a, Answer::NoName)) {
            return Err(failed("no such host".into()));
        }
        if answers.iter().any(|(_, a)| matches!(a, Answer::TimedOut)) {
            return Err(ProxyError::ResolveTimeout {
                host: name.to_string(),
            });
        }
        if let Some(reason) = answers.iter().find_map(|(_, a)| match a {
            Answer::Failed(reason) => Some(reason),
            _ => None,
        }) {
            return Err(failed(reason.to_string()));
        }
        // Every family asked exists without addresses.
        Err(failed(match self.families.as_slice() {
            [only] => {
                let off = match only {
                    Family::V4 => "ipv6=off",
                    Family::V6 => "ipv4=off",
                };
                format!("no {} address ({off})", only.label())
            }
            _ => "no address".to_string(),
        }))
    }
}

/// Removes a lookup from the in-flight table if its task ends without an answer.
struct PendingGuard<'a> {
    inner: &'a Inner,
    key: Option<Key>,
}

impl PendingGuard<'_> {
    fn key_name(&self) -> Arc<str> {
        Arc::clone(&self.key.as_ref().expect("the key is present until taken").0)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            state.pending.remove(&key);
        }
    }
}

/// Waits for every family's answer until `deadline`; once one has addresses, the others get
/// [`FAMILY_GRACE`] more (a family still out then counts as timed out).
async fn gather(pending: Vec<(Family, Pending)>, deadline: Instant) -> Vec<(Family, Answer)> {
    let mut answers: Vec<(Family, Option<Answer>)> = Vec::new();
    let mut waiting = JoinSet::new();
    for (index, (family, pending)) in pending.into_iter().enumerate() {
        match pending {
            Pending::Ready(answer) => answers.push((family, Some(answer))),
            Pending::Waiting(mut receiver) => {
                answers.push((family, None));
                waiting.spawn(async move {
                    let answer = match receiver.wait_for(Option::is_some).await {
                        Ok(answer) => answer.clone().unwrap_or(Answer::TimedOut),
                        Err(_) => Answer::Failed("the lookup was abandoned".into()),
                    };
                    (index, answer)
                });
            }
        }
    }
    let has_addrs = |answers: &[(Family, Option<Answer>)]| {
        answers
            .iter()
            .any(|(_, a)| matches!(a, Some(Answer::Addrs(_))))
    };
    let mut until = deadline;
    if has_addrs(&answers) {
        until = until.min(deadline::from_now(FAMILY_GRACE));
    }
    while !waiting.is_empty() {
        tokio::select! {
            joined = waiting.join_next() => {
                if let Some(Ok((index, answer))) = joined {
                    answers[index].1 = Some(answer);
                    if has_addrs(&answers) {
                        until = until.min(deadline::from_now(FAMILY_GRACE));
                    }
                }
            }
            () = sleep_until(until) => break,
        }
    }
    answers
        .into_iter()
        .map(|(family, answer)| (family, answer.unwrap_or(Answer::TimedOut)))
        .collect()
}

/// Asks `servers` about `name` in the order given. The first server is asked at once; a
/// server that fails (SERVFAIL, REFUSED, a network error) hands over to the next at once, and
/// one that stays silent for a step (a second at most) does too, while its query stays open:
/// the first definitive answer wins. A server that failed is not asked again; a silent one is
/// asked again once its query gives up after `try_timeout`. Everything ends at `timeout`.
async fn ask_in_order(
    servers: &[NameServer],
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
    try_timeout: Duration,
) -> Reply {
    let count = servers.len();
    let started = Instant::now();
    let deadline = deadline::after(started, timeout);
    let step = (timeout / (count as u32 + 1)).min(FAILOVER_STEP);
    let mut attempts = JoinSet::new();
    let mut busy = vec![false; count];
    let mut failed = vec![false; count];
    let mut cursor = 0;
    let mut next_at = started;
    let mut failure = None;
    loop {
        let candidate = (0..count)
            .map(|k| (cursor + k) % count)
            .find(|&i| !busy[i] && !failed[i]);
        if candidate.is_none() && attempts.is_empty() {
            // Every server answered with a failure.
            return failure.unwrap_or_else(|| Reply::of(Answer::Failed("no name server".into())));
        }
        tokio::select! {
            () = sleep_until(next_at), if candidate.is_some() => {
                let i = candidate.unwrap_or_default();
                busy[i] = true;
                cursor = (i + 1) % count;
                next_at = deadline::from_now(step);
                let dns = servers[i].dns.clone();
                let name = name.clone();
                attempts.spawn(async move {
                    let result = tokio::time::timeout(try_timeout, dns.lookup(name, rtype)).await;
                    let reply = match result {
                        Ok(result) => reply_of(result, family_of(rtype)),
                        Err(_) => Reply::of(Answer::TimedOut),
                    };
                    (i, reply)
                });
            }
            Some(joined) = attempts.join_next() => {
                let (i, reply) = match joined {
                    Ok(done) => done,
                    Err(error) => {
                        log::warn!("a DNS query task ended abnormally: {error}");
                        continue;
                    }
                };
                busy[i] = false;
                if reply.answer.is_definitive() {
                    return reply;
                }
                log::debug!(
                    "name server {} for \"{name}\" {rtype}: {:?}",
                    servers[i].addr,
                    reply.answer
                );
                if matches!(reply.answer, Answer::Failed(_)) {
                    failed[i] = true;
                    failure = Some(reply);
                    next_at = Instant::now();
                }
            }
            () = sleep_until(deadline) => return Reply::of(Answer::TimedOut),
        }
    }
}

fn family_of(rtype: RecordType) -> Family {
    if rtype == RecordType::AAAA {
        Family::V6
    } else {
        Family::V4
    }
}

/// A hickory resolver that asks one name server, once per call: no cache, no retry, no hosts
/// file; sluice schedules the servers.
fn one_server(addr: SocketAddr, try_timeout: Duration) -> Result<TokioResolver, String> {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![server]),
        TokioRuntimeProvider::default(),
    );
    let options = builder.options_mut();
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.attempts = 0;
    options.num_concurrent_reqs = 1;
    options.timeout = try_timeout;
    builder
        .build()
        .map_err(|e| format!("cannot set up the DNS resolver for {addr}: {e}"))
}

/// What a hickory lookup of one family means here, with the TTL to cache it by.
fn reply_of(result: Result<Lookup, NetError>, family: Family) -> Reply {
    match result {
        Ok(lookup) => {
            let ips: Vec<IpAddr> = lookup
                .answers()
                .iter()
                .filter_map(|record| match (&record.data, family) {
                    (RData::A(a), Family::V4) => Some(IpAddr::V4(a.0)),
                    (RData::AAAA(aaaa), Family::V6) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .take(MAX_ADDRS)
                .collect();
            // The chain is valid as long as its shortest-lived record (CNAMEs included).
            let ttl = lookup.answers().iter().map(|r| r.ttl).min();
            if ips.is_empty() {
                return Reply {
                    answer: Answer::NoData,
                    ttl: None,
                };
            }
            Reply {
                answer: Answer::Addrs(ips.into()),
                ttl,
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(none))) => Reply {
            answer: if none.response_code == ResponseCode::NXDomain {
                Answer::NoName
            } else {
                Answer::NoData
            },
            ttl: none.negative_ttl,
        },
        Err(NetError::Timeout) => Reply::of(Answer::TimedOut),
        Err(error) => Reply::of(Answer::Failed(describe(&error).into())),
    }
}

/// A lookup failure in a few words rather than a dump of the DNS response.
fn describe(error: &NetError) -> String {
    match error {
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            "the name server failed (SERVFAIL)".to_string()
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            "the name server refused the query (REFUSED)".to_string()
        }
        NetError::Dns(DnsError::ResponseCode(code)) => {
            format!("the name server answered {code}")
        }
        NetError::Io(error) => format!("cannot reach the name server: {error}"),
        error => error.to_string(),
    }
}

/// Answers by family of name, bounded in entries: the oldest entry leaves first when full.
#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Cached>,
    /// Insertion order, with the serial each entry had then; an entry replaced since is found
    /// stale by its serial and skipped.
    order: VecDeque<(Key, u64)>,
    serial: u64,
}

struct Cached {
    answer: Answer,
    expires: Instant,
    serial: u64,
}

impl Cache {
    fn get(&mut self, key: &Key, now: Instant) -> Option<Answer> {
        let cached = self.entries.get(key)?;
        if cached.expires > now {
            return Some(cached.answer.clone());
        }
        self.entries.remove(key);
        None
    }

    fn insert(&mut self, key: Key, answer: Answer, expires: Instant) {
        self.serial += 1;
        let serial = self.serial;
        self.order.push_back((key.clone(), serial));
        self.entries.insert(
            key,
            Cached {
                answer,
                expires,
                serial,
            },
        );
        while self.entries.len() > CACHE_ENTRIES {
            let Some((oldest, serial)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&oldest)
                .is_some_and(|c| c.serial == serial)
            {
                self.entries.remove(&oldest);
            }
        }
        // Replaced and expired entries leave stale order records behind; drop them now and
        // then so the queue stays within a small multiple of the cache.
        if self.order.len() > 2 * CACHE_ENTRIES {
            let entries = &self.entries;
            self.order
                .retain(|(key, serial)| entries.get(key).is_some_and(|c| c.serial == *serial));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, family: Family) -> Key {
        (Arc::from(name), family)
    }

    fn addrs(ip: &str) -> Answer {
        Answer::Addrs(vec![ip.parse().unwrap()].into())
    }

    /// A library caller may pass any timeout: one too long to represent means no deadline.
    #[tokio::test]
    async fn a_timeout_too_long_to_represent_is_no_panic() {
        // A name server on loopback that refuses every query.
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let refusing = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                if n >= 12 {
                    buf[2] |= 0x80; // a response
                    buf[3] = (buf[3] & 0xf0) | 5; // REFUSED
                    let _ = server.send_to(&buf[..n], from).await;
                }
            }
        });
        let settings = ResolverSettings {
            servers: vec![addr],
            valid: None,
            ipv4: true,
            ipv6: true,
        };
        let resolver = Resolver::new(Some(&settings), Duration::MAX).unwrap();
        let target = Target::parse_authority("refused.test:443").unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), resolver.resolve(&target))
            .await
            .expect("a refusing server ends the lookup");
        assert!(answer.is_err(), "{answer:?}");
        refusing.abort();
    }

    #[test]
    fn the_cache_forgets_expired_answers() {
        let mut cache = Cache::default();
        let now = Instant::now();
        cache.insert(
            key("a", Family::V4),
            addrs("192.0.2.1"),
            now + Duration::from_secs(5),
        );
        assert!(cache.get(&key("a", Family::V4), now).is_some());
        assert!(cache.get(&key("a", Family::V6), now).is_none());
        assert!(
            cache
                .get(&key("a", Family::V4), now + Duration::from_secs(5))
                .is_none()
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_oldest() {
        let mut cache = Cache::default();
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..CACHE_ENTRIES + 100 {
            cache.insert(key(&format!("n{i}"), Family::V4), Answer::NoName, later);
            // Replacing an entry does not grow the cache, however often it happens.
            cache.insert(key("hot", Family::V4), Answer::NoData, later);
        }
        assert_eq!(cache.len(), CACHE_ENTRIES);
        assert!(cache.order.len() <= 2 * CACHE_ENTRIES + 1);
        let now = Instant::now();
        assert!(cache.get(&key("n0", Family::V4), now).is_none());
        assert!(cache.get(&key("hot", Family::V4), now).is_some());
        let last = format!("n{}", CACHE_ENTRIES + 99);
        assert!(cache.get(&key(&last, Family::V4), now).is_some());
    }

    fn inner(valid: Option<Duration>, families: Vec<Family>) -> Inner {
        Inner {
            name_servers: NameServers::Servers(Vec::new()),
            timeout: Duration::from_secs(30),
            valid,
            families,
            state: Mutex::new(State::default()),
        }
    }

    #[test]
    fn lifetimes_follow_ttls_within_bounds_and_valid_overrides_them() {
        let plain = inner(None, vec![Family::V4]);
        let reply = |answer, ttl| Reply { answer, ttl };
        let secs = Duration::from_secs;
        assert_eq!(
            plain.lifetime(&reply(addrs("192.0.2.1"), Some(300))),
            secs(300)
        );
        assert_eq!(plain.lifetime(&reply(addrs("192.0.2.1"), Some(0))), MIN_TTL);
        assert_eq!(
            plain.lifetime(&reply(addrs("192.0.2.1"), Some(999_999))),
            MAX_TTL
        );
        assert_eq!(plain.lifetime(&reply(Answer::NoName, Some(30))), secs(30));
        assert_eq!(
            plain.lifetime(&reply(Answer::NoName, Some(86_400))),
            MAX_NEGATIVE_TTL
        );
        assert_eq!(plain.lifetime(&reply(Answer::NoData, None)), NEGATIVE_TTL);
        assert_eq!(plain.lifetime(&reply(Answer::TimedOut, None)), FAILURE_TTL);

        let valid = inner(Some(secs(5)), vec![Family::V4]);
        assert_eq!(valid.lifetime(&reply(addrs("192.0.2.1"), Some(1))), secs(5));
        assert_eq!(
            valid.lifetime(&reply(addrs("192.0.2.1"), Some(3600))),
            secs(5)
        );
        assert_eq!(valid.lifetime(&reply(Answer::NoName, Some(3600))), secs(5));
        assert_eq!(valid.lifetime(&reply(Answer::NoName, Some(2))), secs(2));
    }

    #[test]
    fn families_combine_in_order_and_errors_are_explained() {
        let both = inner(None, vec![Family::V4, Family::V6]);
        let got = both
            .combine(
                "x.test",
                &[
                    (Family::V4, addrs("192.0.2.1")),
                    (Family::V6, addrs("2001:db8::1")),
                ],
                443,
            )
            .unwrap();
        assert_eq!(
            got,
            vec![
                "192.0.2.1:443".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap()
            ]
        );
        // One family's trouble does not hide the other's addresses.
        let got = both
            .combine(
                "x.test",
                &[
                    (Family::V4, Answer::TimedOut),
                    (Family::V6, addrs("2001:db8::1")),
                ],
                443,
            )
            .unwrap();
        assert_eq!(got.len(), 1);
        let status = |answers: &[(Family, Answer)]| {
            let error = both.combine("x.test", answers, 443).unwrap_err();
            assert!(error.to_string().contains("\"x.test\""), "{error}");
            (error.status().0, error.to_string())
        };
        assert_eq!(
            status(&[(Family::V4, Answer::NoName), (Family::V6, Answer::TimedOut)]).0,
            502
        );
        assert_eq!(
            status(&[(Family::V4, Answer::NoData), (Family::V6, Answer::TimedOut)]).0,
            504
        );
        let (code, text) = status(&[
            (
                Family::V4,
                Answer::Failed("the name server failed (SERVFAIL)".into()),
            ),
            (Family::V6, Answer::NoData),
        ]);
        assert_eq!(code, 502);
        assert!(text.contains("SERVFAIL"), "{text}");
        let (code, text) = status(&[(Family::V4, Answer::NoData), (Family::V6, Answer::NoData)]);
        assert_eq!(
            (code, text.as_str()),
            (502, "cannot resolve \"x.test\": no address")
        );
        let v4_only = inner(None, vec![Family::V4]);
        let error = v4_only
            .combine("x.test", &[(Family::V4, Answer::NoData)], 443)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot resolve \"x.test\": no IPv4 address (ipv6=off)"
        );
    }
}
