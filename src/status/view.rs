//! What `/status` and `/status.json` show: the process, its totals, and the open connections
//! a query selects (`?client=`, `?user=`, `?host=`), sorted (`?sort=bytes|rate|age`), at most
//! [`LIMIT`] of them. `/status.json` is this, as JSON; the field reference is docs/status.md.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Instant, SystemTime};

use crate::access::Cidr;
use crate::live::{self, View};
use crate::metrics::{self, Totals};
use crate::settings::Config;

use super::settings::Viewers;

/// Connections listed at most: the first of the chosen order (busiest first by default).
pub const LIMIT: usize = 500;

/// What the page says about the configuration; replaced at each load and reload.
#[derive(Debug, Default)]
pub struct Loaded {
    pub file: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub listeners: Vec<SocketAddr>,
    pub viewers: Viewers,
}

static LOADED: RwLock<Option<Arc<Loaded>>> = RwLock::new(None);
static STARTED: OnceLock<(Instant, f64)> = OnceLock::new();

/// Tells the status pages about the configuration just (re)loaded and the proxy listeners it
/// runs. The first call marks the process's start.
pub fn publish(config: &Config, listeners: impl IntoIterator<Item = SocketAddr>) {
    STARTED.get_or_init(|| (Instant::now(), unix_now()));
    let loaded = Loaded {
        file: config.file.clone(),
        at: unix_now(),
        listeners: listeners.into_iter().collect(),
        viewers: config.status_viewers.clone(),
    };
    *LOADED.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(loaded));
}

/// The configuration last published.
pub fn loaded() -> Arc<Loaded> {
    LOADED
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How the list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Most bytes (up and down) first.
    #[default]
    Bytes,
    /// Highest current rate (up and down) first.
    Rate,
    /// Oldest first.
    Age,
}

impl Sort {
    pub fn name(self) -> &'static str {
        match self {
            Sort::Bytes => "bytes",
            Sort::Rate => "rate",
            Sort::Age => "age",
        }
    }
}

/// A page's query: `client=ADDR|CIDR|ADDR:PORT`, `user=NAME`, `host=PATTERN`, `sort=`.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub client: Option<String>,
    pub user: Option<String>,
    pub host: Option<String>,
    pub sort: Sort,
    client_match: Option<ClientMatch>,
}

#[derive(Debug, Clone)]
enum ClientMatch {
    Range(Cidr),
    Exact(SocketAddr),
}

impl Query {
    /// Parses the text after `?`. An empty value is no filter. `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Query, String> {
        let mut query = Query::default();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| format!("bad escape in {name}="))?;
            let value = Some(value).filter(|v| !v.is_empty());
            match name {
                "client" => query.client = value,
                "user" => query.user = value,
                "host" => query.host = value.map(|v| v.to_ascii_lowercase()),
                "sort" => {
                    query.sort = match value.as_deref() {
                        None | Some("bytes") => Sort::Bytes,
                        Some("rate") => Sort::Rate,
                        Some("age") => Sort::Age,
                        Some(other) => {
                            return Err(format!("unknown sort \"{other}\": bytes, rate or age"));
                        }
                    };
                }
                // Other parameters (a cache-buster, a refresh period) are the page's own.
                _ => {}
            }
        }
        if let Some(client) = &query.client {
            let bracketless = client.trim_start_matches('[').trim_end_matches(']');
            query.client_match = Some(if let Ok(range) = Cidr::parse(bracketless) {
                ClientMatch::Range(range)
            } else if let Ok(exact) = client.parse::<SocketAddr>() {
                ClientMatch::Exact(exact)
            } else {
                return Err(format!(
                    "client=\"{client}\" is not an address, a CIDR range or an address:port"
                ));
            });
        }
        Ok(query)
    }

    fn selects(&self, view: &View) -> bool {
        let client_ok = match &self.client_match {
            None => true,
            Some(ClientMatch::Range(range)) => range.contains(view.client.ip()),
            Some(ClientMatch::Exact(addr)) => {
                canonical(*addr) == canonical(view.client) && addr.port() == view.client.port()
            }
        };
        let user_ok = self
            .user
            .as_ref()
            .is_none_or(|user| view.details.user.as_ref() == Some(user));
        let host_ok = self.host.as_ref().is_none_or(|pattern| {
            view.details
                .destination
                .as_deref()
                .is_some_and(|destination| host_matches(pattern, destination))
        });
        client_ok && user_ok && host_ok
    }

    /// The query string that selects the same connections in another order.
    pub fn with_sort(&self, sort: Sort) -> String {
        let mut out = format!("sort={}", sort.name());
        for (name, value) in [
            ("client", &self.client),
            ("user", &self.user),
            ("host", &self.host),
        ] {
            if let Some(value) = value {
                let _ = write!(out, "&{name}={}", percent_encode(value));
            }
        }
        out
    }
}

fn canonical(addr: SocketAddr) -> IpAddr {
    addr.ip().to_canonical()
}

/// `host=PATTERN` against a `host:port` destination: the pattern is a glob (`*` is any run of
/// characters), compared without case with the host alone, or with `host:port` when it
/// names a port.
fn host_matches(pattern: &str, destination: &str) -> bool {
    let destination = destination.to_ascii_lowercase();
    let host = match destination.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => destination.as_str(),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let with_port = pattern.contains(':') && !pattern.contains("::") && !host.contains(':');
    let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
    glob(pattern, if with_port { &destination } else { host })
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `%XX` escapes and `+` for a space, as a browser sends a form.
fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~*:[]/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Everything one page shows.
pub struct Report {
    pub loaded: Arc<Loaded>,
    pub now: f64,
    pub uptime: f64,
    pub totals: Totals,
    pub query: Query,
    /// Open connections the query selects.
    pub matched: usize,
    /// The first [`LIMIT`] of them, in the query's order.
    pub connections: Vec<View>,
}

impl Report {
    /// Reads the registry now.
    pub fn take(query: Query) -> Report {
        let all = live::snapshot();
        let mut totals = metrics::get().totals();
        // The metric counts connections until they become tunnels; here a tunnel stays one.
        totals.connections_open = all.len() as u64;
        let mut connections: Vec<View> = all.into_iter().filter(|v| query.selects(v)).collect();
        let matched = connections.len();
        let key = |v: &View| match query.sort {
            Sort::Bytes => (v.bytes_up + v.bytes_down) as f64,
            Sort::Rate => v.rate_up + v.rate_down,
            Sort::Age => v.age.as_secs_f64(),
        };
        // Descending by the key; the connection number breaks ties, so the order is stable.
        connections.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.id.cmp(&b.id)));
        connections.truncate(LIMIT);
        let now = unix_now();
        Report {
            loaded: loaded(),
            now,
            uptime: STARTED.get().map_or(0.0, |s| s.0.elapsed().as_secs_f64()),
            totals,
            query,
            matched,
            connections,
        }
    }

    /// `/status.json`.
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(512 + 400 * self.connections.len());
        let t = &self.totals;
        let _ = write!(
            out,
            "{{\"version\":{},\"now\":{:.3},\"uptime_seconds\":{:.3},\
             \"config\":{{\"file\":{},\"loaded\":{:.3}}},\"listeners\":[",
            string(env!("CARGO_PKG_VERSION")),
            self.now,
            self.uptime,
            string(&self.loaded.file),
            self.loaded.at,
        );
        for (i, listener) in self.loaded.listeners.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(out, "{comma}{}", string(&listener.to_string()));
        }
        let _ = write!(
            out,
            "],\"totals\":{{\"connections_open\":{},\"connections_accepted\":{},\
             \"tunnels_open\":{},\"tunnels_opened\":{},\"requests\":{},\"bytes_up\":{},\
             \"bytes_down\":{}}},\"query\":{{\"client\":{},\"user\":{},\"host\":{},\
             \"sort\":{}}},\"matched\":{},\"shown\":{},\"limit\":{LIMIT},\"connections\":[",
            t.connections_open,
            t.connections_accepted,
            t.tunnels_open,
            t.tunnels_opened,
            t.requests,
            t.bytes_up,
            t.bytes_down,
            optional(self.query.client.as_deref()),
            optional(self.query.user.as_deref()),
            optional(self.query.host.as_deref()),
            string(self.query.sort.name()),
            self.matched,
            self.connections.len(),
        );
        for (i, v) in self.connections.iter().enumerate() {
            let d = &v.details;
            let _ = write!(
                out,
                "{}{{\"id\":{},\"client\":{},\"user\":{},\"destination\":{},\"upstream\":{},\
                 \"route\":{},\"state\":{},\"started\":{:.3},\"age_seconds\":{:.3},\
                 \"requests\":{},\"bytes_up\":{},\"bytes_down\":{},\"rate_up\":{:.1},\
                 \"rate_down\":{:.1}}}",
                if i == 0 { "" } else { "," },
                v.id,
                string(&v.client.to_string()),
                optional(d.user.as_deref()),
                optional(d.destination.as_deref()),
                optional(d.upstream.map(|a| a.to_string()).as_deref()),
                optional(d.route.as_ref().map(|r| r.name())),
                string(v.state.name()),
                v.started,
                v.age.as_secs_f64(),
                d.requests,
                v.bytes_up,
                v.bytes_down,
                v.rate_up,
                v.rate_down,
            );
        }
        out.push_str("]}\n");
        out
    }
}

/// A JSON string.
fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // `<` too, so the JSON can never close a script element it is pasted into.
            c if (c as u32) < 0x20 || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn optional(text: Option<&str>) -> String {
    text.map_or_else(|| "null".to_string(), string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(host_matches("example.org", "example.org:443"));
        assert!(host_matches("example.org", "EXAMPLE.org:443"));
        assert!(host_matches("*.example.org", "a.b.example.org:443"));
        assert!(!host_matches("*.example.org", "example.org:443"));
        assert!(host_matches("*example*", "my-example.net:80"));
        assert!(host_matches("example.org:443", "example.org:443"));
        assert!(!host_matches("example.org:80", "example.org:443"));
        assert!(host_matches("::1", "[::1]:443"));
        assert!(!host_matches("example", "example.org:443"));
    }

    #[test]
    fn queries() {
        let q =
            Query::parse("client=127.0.0.0%2F8&user=al+ice&host=*.Example.org&sort=age").unwrap();
        assert_eq!(q.client.as_deref(), Some("127.0.0.0/8"));
        assert_eq!(q.user.as_deref(), Some("al ice"));
        assert_eq!(q.host.as_deref(), Some("*.example.org"));
        assert_eq!(q.sort, Sort::Age);
        assert!(Query::parse("sort=size").is_err());
        assert!(Query::parse("client=nobody").is_err());
        assert!(Query::parse("client=%zz").is_err());
        assert!(Query::parse("client=[::1]:5000").is_ok());
        assert!(Query::parse("client=&refresh=5").unwrap().client.is_none());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n<"), "\"a\\\"b\\\\c\\u000a\\u003c\"");
    }
}
