//! The whole configuration sluice runs with: each `server { }` block's settings, made of the
//! settings of the modules that act on its connections, and the few that hold for the process.
//!
//! [`crate::config`] reads the nginx language; each module declares its directives and how it
//! applies them beside its settings (`access::settings`, `forward::settings`, ...); `build`
//! walks the `http` / `server` / `location` blocks and gives each directive to its module.

mod build;
mod ignored;
mod listen;

use std::path::Path;
use std::time::Duration;

pub use build::directives;
pub use listen::Listen;

use crate::access::settings::AccessSettings;
use crate::access::users::UsersBlock;
use crate::access_log::AccessLog;
use crate::config::values::PortList;
use crate::config::{ConfigError, Origin};
use crate::connect::ConnectSettings;
use crate::forward::settings::Forwarding;
use crate::http2::settings::Http2Settings;
use crate::limits::settings::Rates;
use crate::request::settings::ClientSettings;
use crate::resolve::settings::DnsSettings;
use crate::rewrite::Rewrite;
use crate::route::Routes;
use crate::status::settings::{StatusListen, Viewers};
use crate::transport::RealIp;
use crate::transport::tls::TlsSettings;

/// The configuration sluice runs with when no `-c FILE` is given: a loopback listener for HTTPS
/// tunnels and plain-HTTP forwarding, using the system's DNS settings.
pub const EMBEDDED_DEFAULT: &str = "\
# sluice's embedded default: a proxy for this machine only.
server {
    listen 127.0.0.1:3128;
    proxy_connect;
    proxy_connect_allow 443 563;
    location / {
        proxy_pass http://$http_host$request_uri;
    }
}
";

/// The name the embedded default goes by in messages.
pub const EMBEDDED_NAME: &str = "(embedded default)";

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, as messages name it.
    pub file: String,
    pub servers: Vec<Server>,
    /// `max_connections`: client connections open at once, over the whole process.
    pub max_connections: Option<usize>,
    /// `shutdown_timeout`: how long open connections may finish after SIGTERM or SIGINT.
    pub shutdown_timeout: Duration,
    /// `worker_processes`: threads serving connections; `None` (`auto`) is one per core. Read
    /// at start only.
    pub worker_processes: Option<usize>,
    /// `status_listen`: where `/metrics` and `/healthz` are served; off by default.
    pub status_listen: Option<StatusListen>,
    /// `status_allow` / `status_deny`: who may see `/status` (loopback only by default).
    pub status_viewers: Viewers,
    /// Directives that were accepted but do nothing, worded for the operator (`file:line` included).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = crate::config::read(path, &shown)?;
        Config::parse(&text, &shown)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT.as_bytes(), EMBEDDED_NAME)
            .expect("the embedded default configuration is valid")
    }

    /// Validates config text; `file` is the name errors are reported under.
    pub fn parse(text: &[u8], file: &str) -> Result<Config, ConfigError> {
        let tree = crate::config::parse(text, file)?;
        build::build(&tree, file)
    }

    /// Every level's access log: each server's and each of its locations'.
    pub fn access_logs(&self) -> impl Iterator<Item = &AccessLog> {
        self.servers.iter().flat_map(|server| {
            std::iter::once(&server.access_log)
                .chain(server.locations.iter().map(|l| &l.access_log))
        })
    }
}

/// One `server { }` block: its listeners and the policy for the connections they accept.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where the block starts, to name it in logs.
    pub origin: Origin,
    pub listen: Vec<Listen>,
    /// `proxy_connect*`: how CONNECT is answered.
    pub connect: ConnectSettings,
    /// `resolver`, `resolver_timeout`.
    pub dns: DnsSettings,
    /// Timeouts and head sizes for clients.
    pub client: ClientSettings,
    /// `proxy_http_allow` — the ports a forwarded plain-HTTP request may reach.
    pub http_ports: PortList,
    /// Forwarding settings written at server (or http) level: the defaults of its locations.
    pub forwarding: Forwarding,
    /// Who may use this server and where they may go.
    pub access: AccessSettings,
    /// `max_connections_per_client`: connections open at once from one client address.
    pub max_connections_per_client: Option<usize>,
    /// `limit_rate*`: bandwidth limits for everyone not named in a `users` block.
    pub rates: Rates,
    /// `users NAME... { }`: other rules for requests authenticated as those names.
    pub users: Vec<UsersBlock>,
    /// `set_real_ip_from`, `proxy_protocol_timeout`: for `listen ... proxy_protocol`.
    pub real_ip: RealIp,
    /// `ssl_*`: for `listen ... ssl`.
    pub tls: TlsSettings,
    /// `access_log`: for CONNECT, refusals, and locations without their own.
    pub access_log: AccessLog,
    /// `route`: which destinations go through a parent proxy.
    pub routes: Routes,
    /// `http2`, `http2_max_concurrent_streams`: HTTP/2 from clients.
    pub http2: Http2Settings,
    /// `set`, `if`, `return` at server level, and the file's `map`s.
    pub rewrite: Rewrite,
    pub locations: Vec<Location>,
}

impl Server {
    /// Settings before any directive: every module's defaults.
    fn defaults(origin: Origin) -> Server {
        Server {
            origin,
            listen: Vec::new(),
            connect: ConnectSettings::default(),
            dns: DnsSettings::default(),
            client: ClientSettings::default(),
            http_ports: PortList::All,
            forwarding: Forwarding::default(),
            access: AccessSettings::default(),
            max_connections_per_client: None,
            rates: Rates::default(),
            users: Vec::new(),
            real_ip: RealIp::default(),
            tls: TlsSettings::default(),
            access_log: AccessLog::default(),
            routes: Routes::default(),
            http2: Http2Settings::default(),
            rewrite: Rewrite::default(),
            locations: Vec::new(),
        }
    }

    /// The location that handles a request for `path`, chosen as nginx chooses among exact
    /// (`=`) and prefix locations: an exact match first, then the longest prefix.
    pub fn location_for(&self, path: &str) -> Option<&Location> {
        let exact = self
            .locations
            .iter()
            .find(|l| matches!(&l.pattern, LocationMatch::Exact(p) if p == path));
        exact.or_else(|| {
            self.locations
                .iter()
                .filter_map(|l| match &l.pattern {
                    LocationMatch::Prefix(p) if path.starts_with(p.as_str()) => Some((p.len(), l)),
                    _ => None,
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, l)| l)
        })
    }
}

/// A `location` block: how requests whose path it matches are forwarded.
#[derive(Debug, Clone)]
pub struct Location {
    pub pattern: LocationMatch,
    pub origin: Origin,
    /// `proxy_pass http://$http_host$request_uri;` — forward to the host the request names.
    pub proxy_pass: bool,
    /// The server's, unless the location sets its own.
    pub forwarding: Forwarding,
    /// `access_log`: the server's unless the location has its own.
    pub access_log: AccessLog,
    /// `set`, `if`, `return` of this location: run after the server's.
    pub rewrite: Rewrite,
}

/// Which paths a location matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationMatch {
    /// `location /prefix` (or `^~ /prefix`).
    Prefix(String),
    /// `location = /path`.
    Exact(String),
}
