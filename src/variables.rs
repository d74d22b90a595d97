//! The variables every template reads (`log_format`, `proxy_connect_response`,
//! `proxy_connect_address`, `proxy_connect_bind`, `tunnel_pass`, `proxy_set_header`, `return`,
//! `set`, `map`, `if`): one enum, one lookup, and one way to read a value from the request's
//! record, the access log [`Entry`].
//!
//! A new variable is a [`Var`] variant, a name in [`Var::lookup`] and an arm in [`Var::value`].
//! `set` and `map` variables ([`Var::Named`]) live in the request's [`Vars`]: a `map` is
//! evaluated when it is first read, once per request.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::access_log::Entry;
use crate::access_log::format::{seconds, with_clock};
use crate::rewrite::map::Maps;
use crate::template::Template;

/// The variables a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    RemoteAddr,
    RemotePort,
    /// `$proxy_protocol_addr`, `$proxy_protocol_port`: the client a PROXY header named.
    ProxyProtocolAddr,
    ProxyProtocolPort,
    /// `$realip_remote_addr`, `$realip_remote_port`: the TCP peer (the balancer).
    RealipRemoteAddr,
    RealipRemotePort,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    ServerProtocol,
    Status,
    BytesSent,
    BodyBytesSent,
    BytesReceived,
    RequestTime,
    ConnectHost,
    ConnectPort,
    ConnectAddr,
    ResolveTime,
    ConnectTime,
    /// `$proxy_connect_first_byte_time`: known so that the module's formats load; sluice
    /// does not measure it, so it is always `-`.
    FirstByteTime,
    UpstreamAddr,
    /// `$upstream_proxy`: the parent proxy's name, or `direct`.
    UpstreamProxy,
    /// `$destination_verdict`: `allow`, `would-deny` (`destination_mode report`) or `deny`.
    DestinationVerdict,
    Connection,
    ConnectionRequests,
    Pid,
    ServerAddr,
    ServerPort,
    /// `$ssl_protocol`, `$ssl_cipher`, `$ssl_server_name`, `$ssl_client_s_dn`,
    /// `$ssl_client_verify`: what the TLS handshake told, on an `ssl` listener.
    SslProtocol,
    SslCipher,
    SslServerName,
    SslClientSDn,
    SslClientVerify,
    /// `$host`: the CONNECT host, or the host of the URI (else of `Host`), lower-cased.
    Host,
    /// `$request_port` (nginx 1.31): the port the request names, else its scheme's.
    RequestPort,
    /// `$uri`: the path without its query; empty for CONNECT.
    Uri,
    /// `$args`, `$query_string`: the query.
    Args,
    /// `$scheme`: as in nginx, `https` when the client came over TLS (an `ssl` listener), else `http`.
    Scheme,
    /// `$1` … `$9`: the last regular expression's captures (`$0`: the whole match).
    Capture(usize),
    /// A `set` or `map` variable, or one of the proxy_connect module's settable ones
    /// (`$proxy_connect_response`, `$proxy_connect_connect_timeout`, ...).
    Named(String),
    /// `$http_NAME`: a request header, underscores standing for dashes.
    Http(String),
}

/// The proxy_connect module's variables that `set` may change per request.
pub const SETTABLE: &[&str] = &[
    "proxy_connect_response",
    "proxy_connect_connect_timeout",
    "proxy_connect_data_timeout",
    "proxy_connect_read_timeout",
    "proxy_connect_send_timeout",
];

/// The names `set` and `map` declare anywhere in the file, known before any template is read
/// (as in nginx, where a variable exists once any directive declares it).
#[derive(Debug, Default)]
pub struct Declared(pub HashSet<String>);

impl Var {
    /// The built-in variable called `name`.
    pub fn lookup(name: &str) -> Option<Var> {
        Some(match name {
            "remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "proxy_protocol_addr" => Var::ProxyProtocolAddr,
            "proxy_protocol_port" => Var::ProxyProtocolPort,
            "realip_remote_addr" => Var::RealipRemoteAddr,
            "realip_remote_port" => Var::RealipRemotePort,
            "remote_user" => Var::RemoteUser,
            "time_local" => Var::TimeLocal,
            "time_iso8601" => Var::TimeIso8601,
            "msec" => Var::Msec,
            "request" => Var::Request,
            "request_method" => Var::RequestMethod,
            "request_uri" => Var::RequestUri,
            "server_protocol" => Var::ServerProtocol,
            "status" => Var::Status,
            "bytes_sent" => Var::BytesSent,
            "body_bytes_sent" => Var::BodyBytesSent,
            "bytes_received" | "request_length" => Var::BytesReceived,
            "request_time" => Var::RequestTime,
            "connect_host" => Var::ConnectHost,
            "connect_port" => Var::ConnectPort,
            "connect_addr" => Var::ConnectAddr,
            "proxy_connect_resolve_time" => Var::ResolveTime,
            "proxy_connect_connect_time" | "upstream_connect_time" => Var::ConnectTime,
            "proxy_connect_first_byte_time" => Var::FirstByteTime,
            "upstream_addr" => Var::UpstreamAddr,
            "upstream_proxy" => Var::UpstreamProxy,
            "destination_verdict" => Var::DestinationVerdict,
            "connection" => Var::Connection,
            "connection_requests" => Var::ConnectionRequests,
            "pid" => Var::Pid,
            "server_addr" => Var::ServerAddr,
            "server_port" => Var::ServerPort,
            "ssl_protocol" => Var::SslProtocol,
            "ssl_cipher" => Var::SslCipher,
            "ssl_server_name" => Var::SslServerName,
            "ssl_client_s_dn" => Var::SslClientSDn,
            "ssl_client_verify" => Var::SslClientVerify,
            "host" => Var::Host,
            "request_port" => Var::RequestPort,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "scheme" => Var::Scheme,
            _ if SETTABLE.contains(&name) => Var::Named(name.to_string()),
            _ if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => {
                Var::Capture(name.parse().ok().filter(|&n| n < 10)?)
            }
            _ => {
                let header = name.strip_prefix("http_")?;
                if header.is_empty() {
                    return None;
                }
                Var::Http(header.replace('_', "-"))
            }
        })
    }

    /// A built-in variable, or one that `set` or `map` declares somewhere in the file.
    pub fn lookup_declared(name: &str, declared: &Declared) -> Option<Var> {
        if declared.0.contains(name) {
            return Some(Var::Named(name.to_string()));
        }
        Var::lookup(name)
    }

    /// Appends this variable's raw value to `out`; `false` if it has none (nginx's "not
    /// found", written as `-` in a log line and as nothing elsewhere).
    pub fn value(&self, entry: &Entry, now: SystemTime, out: &mut Vec<u8>) -> bool {
        let head = entry.head.as_deref();
        let tls = entry.client.tls.as_deref();
        macro_rules! text {
            ($($arg:tt)*) => {{
                let _ = write!(out, $($arg)*);
                true
            }};
        }
        match self {
            Var::RemoteAddr => text!("{}", entry.client.peer.ip()),
            Var::RemotePort => text!("{}", entry.client.peer.port()),
            Var::ProxyProtocolAddr => match entry.client.proxy_protocol {
                Some(source) => text!("{}", source.ip()),
                None => false,
            },
            Var::ProxyProtocolPort => match entry.client.proxy_protocol {
                Some(source) => text!("{}", source.port()),
                None => false,
            },
            Var::RealipRemoteAddr => text!("{}", entry.client.tcp_peer.ip()),
            Var::RealipRemotePort => text!("{}", entry.client.tcp_peer.port()),
            Var::RemoteUser => match &entry.user {
                Some(user) => text!("{user}"),
                None => false,
            },
            Var::TimeLocal => with_clock(now, |clock| text!("{}", clock.local)),
            Var::TimeIso8601 => with_clock(now, |clock| text!("{}", clock.iso8601)),
            Var::Msec => {
                let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                text!("{}.{:03}", since.as_secs(), since.subsec_millis())
            }
            Var::Request => match head {
                Some(h) => text!("{} {} {}", h.method, h.target, protocol(entry, h)),
                None => false,
            },
            Var::RequestMethod => match head {
                Some(h) => text!("{}", h.method),
                None => false,
            },
            Var::RequestUri => match head {
                Some(h) => text!("{}", h.target),
                None => false,
            },
            Var::ServerProtocol => match head {
                Some(h) => text!("{}", protocol(entry, h)),
                None => false,
            },
            Var::Status => text!("{:03}", entry.status),
            Var::BytesSent => text!("{}", entry.bytes_sent),
            Var::BodyBytesSent => text!("{}", entry.body_bytes_sent),
            Var::BytesReceived => text!("{}", entry.bytes_received),
            Var::RequestTime => seconds(out, entry.started.elapsed()),
            Var::ConnectHost => match &entry.connect {
                Some(target) => text!("{}", target.host),
                None => false,
            },
            Var::ConnectPort => match &entry.connect {
                Some(target) => text!("{}", target.port),
                None => false,
            },
            Var::ConnectAddr => match (&entry.connect, entry.upstream) {
                (Some(_), Some(addr)) => text!("{addr}"),
                _ => false,
            },
            Var::DestinationVerdict => match entry.timings.verdict {
                Some(verdict) => text!("{}", verdict.as_str()),
                None => false,
            },
            Var::UpstreamProxy => match &entry.route {
                Some(route) => text!("{route}"),
                None => false,
            },
            Var::UpstreamAddr => match entry.upstream {
                Some(addr) => text!("{addr}"),
                None => false,
            },
            Var::ResolveTime => entry.timings.resolve.is_some_and(|t| seconds(out, t)),
            Var::ConnectTime => entry.timings.connect.is_some_and(|t| seconds(out, t)),
            Var::FirstByteTime => false,
            Var::Connection => text!("{}", entry.client.id),
            Var::ConnectionRequests => text!("{}", entry.requests),
            Var::Pid => text!("{}", std::process::id()),
            Var::ServerAddr => match entry.client.local {
                Some(local) => text!("{}", local.ip()),
                None => false,
            },
            Var::ServerPort => match entry.client.local {
                Some(local) => text!("{}", local.port()),
                None => false,
            },
            Var::Host => match head.and_then(|h| authority(h)) {
                Some(authority) => {
                    let (host, _) = split_port(authority);
                    text!("{}", host.to_ascii_lowercase())
                }
                None => false,
            },
            Var::RequestPort => match head {
                Some(h) => match authority(h).and_then(|a| split_port(a).1) {
                    Some(port) => text!("{port}"),
                    None if h.method != "CONNECT" => text!("80"),
                    None => false,
                },
                None => false,
            },
            Var::Uri => match head {
                Some(h) => text!("{}", path_and_query(h).0),
                None => false,
            },
            Var::Args => match head.and_then(|h| path_and_query(h).1) {
                Some(query) => text!("{query}"),
                None => false,
            },
            Var::Scheme => text!("{}", if tls.is_some() { "https" } else { "http" }),
            Var::Capture(n) => match entry.vars.captures.get(*n).and_then(Option::as_deref) {
                Some(text) => text!("{text}"),
                None => false,
            },
            Var::Named(name) => entry.vars.named(name, entry, now, out),
            Var::SslProtocol => tls.is_some_and(|t| text!("{}", t.protocol)),
            Var::SslCipher => tls.is_some_and(|t| text!("{}", t.cipher)),
            Var::SslServerName => match tls.and_then(|t| t.server_name.as_deref()) {
                Some(name) => text!("{name}"),
                None => false,
            },
            Var::SslClientSDn => match tls.and_then(|t| t.client.as_ref()) {
                Some(client) => text!("{}", client.subject),
                None => false,
            },
            Var::SslClientVerify => tls.is_some_and(|t| text!("{}", t.client_verify())),
            Var::Http(name) => match head.and_then(|h| h.header(name)) {
                Some(value) => {
                    out.extend_from_slice(value);
                    true
                }
                None => false,
            },
        }
    }
}

/// The template's expansion for `entry`, as text (bytes that are not UTF-8 replaced).
pub fn render(template: &Template<Var>, entry: &Entry) -> String {
    let now = SystemTime::now();
    let mut out = Vec::new();
    template.render_bytes(&mut out, |var, out| {
        var.value(entry, now, out);
    });
    String::from_utf8_lossy(&out).into_owned()
}

/// `$server_protocol`: `HTTP/2.0` for a request that came in an HTTP/2 stream (translated to
/// HTTP/1.1 inside sluice), else the request line's version.
fn protocol(entry: &Entry, head: &crate::request::Head) -> &'static str {
    match (entry.client.http2, head.version) {
        (true, _) => "HTTP/2.0",
        (false, 0) => "HTTP/1.0",
        (false, _) => "HTTP/1.1",
    }
}

/// Parses a template whose variables are the built-in ones and those declared in the file.
pub fn parse(text: &str, declared: &Declared) -> Result<Template<Var>, String> {
    Template::parse(text, |name| Var::lookup_declared(name, declared))
}

/// The authority a request names: a CONNECT's target, an absolute URI's, else `Host`.
fn authority(head: &crate::request::Head) -> Option<&str> {
    if head.method == "CONNECT" {
        return Some(&head.target);
    }
    let lower = head.target.get(..7).map(str::to_ascii_lowercase);
    if lower.as_deref() == Some("http://") {
        let rest = &head.target[7..];
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        return Some(authority.rsplit_once('@').map_or(authority, |(_, a)| a));
    }
    head.header("host")
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// `host[:port]` or `[v6][:port]` split at the port.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    if authority.starts_with('[') {
        return match authority.rsplit_once("]:") {
            Some((host, port)) => (&authority[..host.len() + 1], port.parse().ok()),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()),
        None => (authority, None),
    }
}

/// The path a location is chosen by.
pub fn path(head: &crate::request::Head) -> &str {
    path_and_query(head).0
}

/// The path (`$uri`) and query (`$args`) of a request; a CONNECT has neither.
fn path_and_query(head: &crate::request::Head) -> (&str, Option<&str>) {
    if head.method == "CONNECT" {
        return ("", None);
    }
    let mut target = head.target.as_str();
    if let Some(rest) = target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])
    {
        target = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let target = target.split('#').next().unwrap_or_default();
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// The `set` and `map` variables of one request, and the last regular expression's captures.
#[derive(Debug, Default)]
pub struct Vars {
    /// The server's `map`s, read when one of their variables is.
    pub maps: Option<Arc<Maps>>,
    /// `set` values, in the order set (the latest wins).
    set: Vec<(String, String)>,
    /// `$0` … `$9` of the last successful match of an `if`.
    pub captures: Vec<Option<String>>,
    /// `map` results, each computed once per request.
    cache: Mutex<Vec<(String, Option<String>)>>,
    /// How deep `map`s that read other `map`s are being evaluated (a cycle stops here).
    depth: Mutex<u8>,
}

/// Maps reading maps deeper than this are taken as a cycle and read as empty.
const MAX_DEPTH: u8 = 16;

impl Vars {
    /// `set $name value;`.
    pub fn set(&mut self, name: &str, value: String) {
        self.set.retain(|(n, _)| n != name);
        self.set.push((name.to_string(), value));
    }

    /// The value `set` gave `name` in this request.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A `set`/`map` variable's value: `set` first, then its `map`, evaluated once.
    fn named(&self, name: &str, entry: &Entry, now: SystemTime, out: &mut Vec<u8>) -> bool {
        if let Some(value) = self.get(name) {
            out.extend_from_slice(value.as_bytes());
            return true;
        }
        if name == "proxy_connect_response" {
            let _ = write!(
                out,
                "HTTP/1.1 200 Connection Established\r\nProxy-agent: {}\r\n\r\n",
                crate::AGENT
            );
            return true;
        }
        let Some(map) = self.maps.as_ref().and_then(|maps| maps.get(name)) else {
            return false;
        };
        let cached = lock(&self.cache)
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone());
        let value = match cached {
            Some(value) => value,
            None => {
                {
                    let mut depth = lock(&self.depth);
                    if *depth >= MAX_DEPTH {
                        return false;
                    }
                    *depth += 1;
                }
                let value = map.evaluate(entry, now);
                *lock(&self.depth) -= 1;
                lock(&self.cache).push((name.to_string(), value.clone()));
                value
            }
        };
        match value {
            Some(value) => {
                out.extend_from_slice(value.as_bytes());
                true
            }
            None => false,
        }
    }

    /// The same variables, for a tunnel that outlives its connection's task.
    pub fn take(&mut self) -> Vars {
        std::mem::take(self)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
