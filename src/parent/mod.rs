//! Parent proxies: another proxy that sluice hands a request to, for the routes that name it
//! (see [`crate::route`]).
//!
//! A parent's servers are tried in written order with nginx `upstream` semantics: a server
//! that refuses, times out or breaks the handshake counts a failure and the next one is tried
//! within the same request; `max_fails` failures within `fail_timeout` take a server out for
//! `fail_timeout`; `backup` servers are tried only when no primary is left. sluice never
//! resolves the destination on this route: the parent does (corporate split DNS). For a
//! CONNECT the parent is asked for the tunnel here ([`Parent::reach`]); a forwarded request
//! goes to it in absolute form (see [`crate::forward`]).

pub mod settings;
pub mod tls;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::context::ServerContext;
use crate::dial::{DialOptions, dial};
use crate::error::ProxyError;
use crate::metrics::{self, ParentFailure, Peers};
use crate::relay::write_all;
use crate::stream::{HeadError, ReadBuf};
use crate::target::Target;
use crate::upstream::UpstreamStream;

pub use tls::ParentTls;

/// The largest answer head a parent may give to a CONNECT.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// One `parent` block.
pub struct Parent {
    pub name: String,
    /// In written order.
    pub servers: Vec<ParentServer>,
    /// `Proxy-Authorization` value from `credentials_file`.
    pub credentials: Option<String>,
    /// How its `ssl` servers are reached (`ssl_trusted_certificate`), if it has any.
    pub tls: Option<ParentTls>,
}

/// A parent is known by its name: routes and pooled connections compare names.
impl PartialEq for Parent {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Parent {}

impl Hash for Parent {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// Never shows the credentials.
impl fmt::Debug for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parent")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .field("credentials", &self.credentials.as_ref().map(|_| "…"))
            .finish()
    }
}

/// One `server` of a parent, with its health.
#[derive(Debug)]
pub struct ParentServer {
    pub target: Target,
    /// `max_fails=`: failures within `fail_timeout` that take it out; 0 never does.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Tried only when no primary server is left.
    pub backup: bool,
    /// `ssl`: spoken to over TLS.
    pub ssl: bool,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    /// Failures counted since `since`.
    fails: u32,
    since: Option<Instant>,
    /// Out until then.
    down_until: Option<Instant>,
}

impl ParentServer {
    pub fn new(target: Target, max_fails: u32, fail_timeout: Duration, backup: bool) -> Self {
        ParentServer {
            target,
            max_fails,
            fail_timeout,
            backup,
            ssl: false,
            health: Mutex::default(),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether it is out after too many failures.
    pub fn is_down(&self, now: Instant) -> bool {
        self.health().down_until.is_some_and(|until| now < until)
    }

    fn failed(&self, now: Instant) {
        let mut health = self.health();
        if health
            .since
            .is_none_or(|since| now.duration_since(since) >= self.fail_timeout)
        {
            health.fails = 0;
            health.since = Some(now);
        }
        health.fails += 1;
        if self.max_fails > 0 && health.fails >= self.max_fails {
            health.down_until = Some(now + self.fail_timeout);
            health.fails = 0;
            health.since = None;
        }
    }

    fn succeeded(&self) {
        *self.health() = Health::default();
    }
}

/// A connection to one of a parent's servers.
pub struct Reached {
    pub stream: UpstreamStream,
    /// The parent server's address (`$upstream_addr`).
    pub addr: SocketAddr,
    /// Bytes the parent sent after granting a tunnel: the client's.
    pub early: Vec<u8>,
}

/// Why one server did not give the connection.
enum NotReached {
    /// The parent answered, and its answer is the request's: no other server is tried.
    Answer(ProxyError),
    /// The server failed: it counts a failure and the next one is tried.
    Failed(Failure),
}

/// Why one server could not be used.
struct Failure {
    reason: String,
    cause: ParentFailure,
}

impl Failure {
    /// A server failure for this reason.
    fn of(reason: impl Into<String>, cause: ParentFailure) -> NotReached {
        NotReached::Failed(Failure {
            reason: reason.into(),
            cause,
        })
    }

    /// Resolving or dialling a server failed.
    fn dial(error: ProxyError) -> NotReached {
        let cause = match &error {
            ProxyError::ConnectFailed { error, .. }
                if error.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                ParentFailure::Refused
            }
            _ if error.class().status == 504 => ParentFailure::Timeout,
            _ => ParentFailure::Error,
        };
        let reason = match &error {
            ProxyError::ConnectFailed { error, .. } => crate::error::describe(error),
            ProxyError::ConnectTimeout { .. } => "connect timed out".to_string(),
            other => other.to_string(),
        };
        Failure::of(reason, cause)
    }
}

impl Peers for Parent {
    fn servers_up(&self) -> usize {
        let now = Instant::now();
        self.servers.iter().filter(|s| !s.is_down(now)).count()
    }
}

impl Parent {
    /// The servers to try, in order: the live primaries, then the live backups.
    fn candidates(&self, now: Instant) -> Vec<&ParentServer> {
        let live = |backup: bool| {
            self.servers
                .iter()
                .filter(move |s| s.backup == backup && !s.is_down(now))
        };
        live(false).chain(live(true)).collect()
    }

    /// Connects to the first server that answers; for a `tunnel` to `target`, also asks it
    /// for the tunnel. Every server failing → 502 naming the parent and each server's reason
    /// (504 if one timed out); the parent refusing the tunnel → 502 with its status.
    pub async fn reach(
        self: &Arc<Self>,
        ctx: &ServerContext,
        target: &Target,
        tunnel: bool,
        options: DialOptions,
    ) -> Result<Reached, ProxyError> {
        let counters = metrics::get();
        let peers: Weak<dyn Peers> = Arc::downgrade(self) as Weak<Parent>;
        counters.parent_request(&self.name, peers);
        let candidates = self.candidates(Instant::now());
        let mut failures = Vec::new();
        if candidates.is_empty() {
            failures.extend(
                self.servers
                    .iter()
                    .map(|s| format!("{}: down after failures", s.target)),
            );
        }
        let mut timed_out = false;
        for server in candidates {
            match self.try_server(ctx, server, target, tunnel, options).await {
                Ok(reached) => {
                    server.succeeded();
                    return Ok(reached);
                }
                Err(NotReached::Answer(refused)) => {
                    // The server works; its answer is the parent's.
                    server.succeeded();
                    counters.parent_failed(&self.name, ParentFailure::Rejected);
                    return Err(refused);
                }
                Err(NotReached::Failed(failure)) => {
                    log::debug!(
                        "parent {} server {}: {}",
                        self.name,
                        server.target,
                        failure.reason
                    );
                    server.failed(Instant::now());
                    counters.parent_failed(&self.name, failure.cause);
                    timed_out |= failure.cause == ParentFailure::Timeout;
                    failures.push(format!("{}: {}", server.target, failure.reason));
                }
            }
        }
        Err(ProxyError::ParentFailed {
            parent: self.name.clone(),
            reasons: failures,
            timed_out,
        })
    }

    /// Connects to one server (and asks it for the tunnel).
    async fn try_server(
        &self,
        ctx: &ServerContext,
        server: &ParentServer,
        target: &Target,
        tunnel: bool,
        options: DialOptions,
    ) -> Result<Reached, NotReached> {
        let addrs = ctx
            .resolver
            .resolve(&server.target)
            .await
            .map_err(Failure::dial)?;
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| !ctx.own_listeners.contains(*addr))
            .collect();
        if addrs.is_empty() {
            return Err(Failure::of(
                "is this proxy's own listener",
                ParentFailure::Error,
            ));
        }
        let (socket, addr) = dial(&addrs, &server.target.to_string(), options)
            .await
            .map_err(Failure::dial)?;
        let mut stream = match (&self.tls, server.ssl) {
            (Some(tls), true) => tls
                .connect(socket, &server.target, options.timeout)
                .await
                .map_err(|(reason, cause)| Failure::of(reason, cause))?,
            _ => UpstreamStream::Plain(socket),
        };
        let early = if tunnel {
            self.ask_tunnel(&mut stream, target, options.timeout)
                .await?
        } else {
            Vec::new()
        };
        Ok(Reached {
            stream,
            addr,
            early,
        })
    }

    /// Sends `CONNECT target` with the parent's credentials and reads its answer; on a 2xx,
    /// returns what the parent sent after its head.
    async fn ask_tunnel(
        &self,
        stream: &mut UpstreamStream,
        target: &Target,
        timeout: Duration,
    ) -> Result<Vec<u8>, NotReached> {
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = &self.credentials {
            head.push_str(&format!("Proxy-Authorization: {credentials}\r\n"));
        }
        head.push_str("\r\n");
        if write_all(stream, head.as_bytes(), timeout).await.is_err() {
            return Err(Failure::of(
                "closed before the CONNECT was sent",
                ParentFailure::Error,
            ));
        }
        let mut buf = ReadBuf::default();
        let end = match buf
            .read_head(stream, MAX_ANSWER_HEAD, timeout, timeout)
            .await
        {
            Ok(end) => end,
            Err(HeadError::Idle | HeadError::TimedOut) => {
                return Err(Failure::of(
                    "no answer to CONNECT in time",
                    ParentFailure::Timeout,
                ));
            }
            Err(HeadError::Silent) => {
                return Err(Failure::of(
                    "closed without answering the CONNECT",
                    ParentFailure::Error,
                ));
            }
            Err(error) => {
                return Err(Failure::of(
                    format!("no usable answer to CONNECT ({error:?})"),
                    ParentFailure::Error,
                ));
            }
        };
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        let status = match response.parse(&buf.data()[..end]) {
            Ok(httparse::Status::Complete(_)) => response.code.unwrap_or(0),
            _ => {
                return Err(Failure::of(
                    "malformed answer to CONNECT",
                    ParentFailure::Error,
                ));
            }
        };
        if !(200..300).contains(&status) {
            return Err(NotReached::Answer(ProxyError::ParentRefused {
                parent: self.name.clone(),
                status,
            }));
        }
        buf.consume(end);
        Ok(buf.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(max_fails: u32) -> ParentServer {
        let target = Target::parse_host_port("127.0.0.1:3128", None).unwrap();
        ParentServer::new(target, max_fails, Duration::from_secs(10), false)
    }

    #[test]
    fn down_after_max_fails_within_fail_timeout_then_back() {
        let start = Instant::now();
        let two = server(2);
        two.failed(start);
        assert!(!two.is_down(start), "one failure of two allowed");
        two.failed(start + Duration::from_secs(1));
        assert!(two.is_down(start + Duration::from_secs(2)));
        assert!(
            !two.is_down(start + Duration::from_secs(12)),
            "back after fail_timeout"
        );
    }

    #[test]
    fn failures_further_apart_than_fail_timeout_do_not_add_up() {
        let start = Instant::now();
        let two = server(2);
        two.failed(start);
        two.failed(start + Duration::from_secs(11));
        assert!(!two.is_down(start + Duration::from_secs(11)));
    }

    #[test]
    fn a_success_clears_the_count_and_max_fails_0_never_takes_a_server_out() {
        let start = Instant::now();
        let two = server(2);
        two.failed(start);
        two.succeeded();
        two.failed(start);
        assert!(!two.is_down(start));
        let never = server(0);
        for _ in 0..5 {
            never.failed(start);
        }
        assert!(!never.is_down(start));
    }
}
