//! The configuration: nginx syntax in, typed settings out.
//!
//! A file goes through three steps, each in its own module: [`lexer`] (bytes → tokens with line
//! numbers), [`syntax`] (tokens → a tree of directives) and [`build`] (tree → [`Config`], where
//! every directive's arguments are checked). Every error names `file:line`.

mod build;
mod cx;
pub mod directive;
mod error;
mod lexer;
mod syntax;
pub mod values;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub use cx::{Cx, MAX_TIME};
pub use error::{ConfigError, Origin};
pub use syntax::Directive;

use crate::access::auth::Users;
use crate::access::{ClientRules, DestinationRules};
use crate::access_log::AccessLog;
use crate::request::Limits;
use crate::template::Template;

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
    pub servers: Vec<Server>,
    /// `max_connections`: client connections open at once, over the whole process.
    pub max_connections: Option<usize>,
    /// `shutdown_timeout`: how long open connections may finish after SIGTERM or SIGINT.
    pub shutdown_timeout: Duration,
    /// `status_listen`: where `/metrics` and `/healthz` are served; off by default.
    pub status_listen: Option<StatusListen>,
    /// Directives that were accepted but do nothing, worded for the operator (`file:line` included).
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| {
            ConfigError::whole_file(format!(
                "cannot read the configuration file \"{shown}\": {e}"
            ))
        })?;
        Config::parse(&text, &shown)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT.as_bytes(), EMBEDDED_NAME)
            .expect("the embedded default configuration is valid")
    }

    /// Validates config text; `file` is the name errors are reported under.
    pub fn parse(text: &[u8], file: &str) -> Result<Config, ConfigError> {
        let tokens = lexer::tokenize(text, file)?;
        let tree = syntax::parse(&tokens, file)?;
        build::build(&tree, file)
    }
}

/// One `server { }` block: its listeners and the policy for the connections they accept.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where the block starts, to name it in logs.
    pub origin: Origin,
    pub listen: Vec<Listen>,
    /// `proxy_connect;` — whether CONNECT is served at all.
    pub proxy_connect: bool,
    /// `proxy_connect_allow` — the ports a CONNECT may reach.
    pub connect_ports: PortList,
    /// `proxy_connect_connect_timeout` — bound on establishing the upstream connection.
    pub connect_timeout: Duration,
    /// `proxy_connect_data_timeout` — longest pause between two reads or writes in a tunnel.
    pub data_timeout: Duration,
    /// `proxy_connect_response` — replaces the standard `200 Connection Established` head.
    pub connect_response: Option<Template<ConnectVar>>,
    /// `proxy_connect_address` — dial this address instead of the resolved one.
    pub connect_address: Option<(IpAddr, Option<u16>)>,
    /// `proxy_connect_bind` — the source address of upstream connections.
    pub connect_bind: Option<IpAddr>,
    /// `resolver` — `None` means the system configuration.
    pub resolver: Option<ResolverSettings>,
    /// `resolver_timeout`.
    pub resolver_timeout: Duration,
    /// `client_header_timeout` — time allowed to receive a whole request head.
    pub client_header_timeout: Duration,
    /// `keepalive_timeout` — how long an idle client connection waits for its next request.
    pub keepalive_timeout: Duration,
    /// `client_body_timeout` — longest pause between two reads of a request body.
    pub client_body_timeout: Duration,
    /// `send_timeout` — longest pause between two writes of a response to the client.
    pub send_timeout: Duration,
    /// `proxy_http_allow` — the ports a forwarded plain-HTTP request may reach.
    pub http_ports: PortList,
    /// Forwarding settings written at server (or http) level: the defaults of its locations.
    pub forwarding: Forwarding,
    /// `allow` / `deny`: which clients may use this server.
    pub clients: ClientRules,
    /// `destination_allow` / `destination_deny`: where they may go.
    pub destinations: DestinationRules,
    /// `auth_basic` realm; `None` is `off`.
    pub auth_realm: Option<String>,
    /// `auth_basic_user_file`, read when the configuration is.
    pub auth_users: Option<Users>,
    /// `max_connections_per_client`: connections open at once from one client address.
    pub max_connections_per_client: Option<usize>,
    /// `large_client_header_buffers`: request head size limits.
    pub limits: Limits,
    /// `access_log`: for CONNECT, refusals, and locations without their own.
    pub access_log: AccessLog,
    pub locations: Vec<Location>,
}

impl Server {
    /// Settings before any directive: the defaults of nginx and of the proxy_connect module.
    fn defaults(origin: Origin) -> Server {
        Server {
            origin,
            listen: Vec::new(),
            proxy_connect: false,
            connect_ports: PortList::https_default(),
            connect_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(60),
            connect_response: None,
            connect_address: None,
            connect_bind: None,
            resolver: None,
            resolver_timeout: Duration::from_secs(30),
            client_header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            client_body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            http_ports: PortList::All,
            forwarding: Forwarding::default(),
            clients: ClientRules::default(),
            destinations: DestinationRules::default(),
            auth_realm: None,
            auth_users: None,
            max_connections_per_client: None,
            limits: Limits::default(),
            access_log: AccessLog::default(),
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

/// One listening address of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Where the `listen` directive was written.
    pub origin: Origin,
    /// `backlog=N`; the default is the system's maximum.
    pub backlog: Option<u32>,
    /// `reuseport`: let several sockets share the port.
    pub reuseport: bool,
}

/// `status_listen ADDR:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListen {
    pub addr: SocketAddr,
    pub origin: Origin,
}

/// `resolver ADDRESS ... [valid=TIME] [ipv4=on|off] [ipv6=on|off]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers, in the order to try them.
    pub servers: Vec<SocketAddr>,
    /// `valid=` — overrides the records' TTL for caching.
    pub valid: Option<Duration>,
    pub ipv4: bool,
    pub ipv6: bool,
}

/// A `location` block: how requests whose path it matches are forwarded.
#[derive(Debug, Clone)]
pub struct Location {
    pub pattern: LocationMatch,
    pub origin: Origin,
    /// `proxy_pass http://$http_host$request_uri;` — forward to the host the request names.
    pub proxy_pass: bool,
    pub forwarding: Forwarding,
    /// `access_log`: the server's unless the location has its own.
    pub access_log: AccessLog,
}

/// Which paths a location matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationMatch {
    /// `location /prefix` (or `^~ /prefix`).
    Prefix(String),
    /// `location = /path`.
    Exact(String),
}

/// Settings for forwarding plain-HTTP requests; nginx's `proxy_*` directives.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// `proxy_set_header NAME VALUE;`, in order. An empty value removes the header.
    pub set_headers: Vec<SetHeader>,
    /// `proxy_connect_timeout`.
    pub connect_timeout: Duration,
    /// `proxy_read_timeout` — longest wait for the next bytes from the origin.
    pub read_timeout: Duration,
    /// `proxy_send_timeout` — longest wait for the origin to take more bytes.
    pub send_timeout: Duration,
    /// `proxy_via` — add `Via: 1.1 sluice` to forwarded requests and responses.
    pub via: bool,
}

impl Default for Forwarding {
    /// nginx's defaults, and `Via` on as RFC 9110 asks of proxies.
    fn default() -> Self {
        Forwarding {
            set_headers: Vec::new(),
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            via: true,
        }
    }
}

/// One `proxy_set_header`.
#[derive(Debug, Clone)]
pub struct SetHeader {
    pub name: String,
    pub value: Template<HeaderVar>,
}

/// Variables available in `proxy_set_header` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderVar {
    /// `$http_host`: the request's authority. RFC 9112 §3.2.2 makes the URI's authority the
    /// Host of an absolute-form request, so this is never a different Host header's value.
    HttpHost,
    /// `$host`: the host without its port.
    Host,
    /// `$remote_addr`, `$remote_port`: the client.
    RemoteAddr,
    RemotePort,
    /// `$proxy_add_x_forwarded_for`: the client's X-Forwarded-For with its address appended.
    ProxyAddXForwardedFor,
    /// `$scheme`: always `http`.
    Scheme,
    /// `$request_uri`: the origin-form path and query.
    RequestUri,
    /// `$request_method`.
    RequestMethod,
    /// `$http_NAME`: the request header NAME (underscores stand for dashes).
    Http(String),
}

impl HeaderVar {
    /// The variable a name stands for, if it is one `proxy_set_header` knows.
    pub fn lookup(name: &str) -> Option<HeaderVar> {
        Some(match name {
            "http_host" => HeaderVar::HttpHost,
            "host" => HeaderVar::Host,
            "remote_addr" => HeaderVar::RemoteAddr,
            "remote_port" => HeaderVar::RemotePort,
            "proxy_add_x_forwarded_for" => HeaderVar::ProxyAddXForwardedFor,
            "scheme" => HeaderVar::Scheme,
            "request_uri" => HeaderVar::RequestUri,
            "request_method" => HeaderVar::RequestMethod,
            _ => HeaderVar::Http(name.strip_prefix("http_")?.replace('_', "-")),
        })
    }
}

/// The ports a CONNECT may reach (`proxy_connect_allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortList {
    All,
    /// Inclusive ranges; a single port is a range of one.
    Ranges(Vec<(u16, u16)>),
}

impl PortList {
    /// The proxy_connect module's default: HTTPS and NNTPS.
    pub fn https_default() -> PortList {
        PortList::Ranges(vec![(443, 443), (563, 563)])
    }

    pub fn allows(&self, port: u16) -> bool {
        match self {
            PortList::All => true,
            PortList::Ranges(ranges) => ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port)),
        }
    }
}

/// Variables available in `proxy_connect_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectVar {
    /// `$connect_host`: the host as the client wrote it.
    Host,
    /// `$connect_port`.
    Port,
    /// `$connect_addr`: the upstream address actually connected to, `ip:port`.
    Addr,
}

impl ConnectVar {
    fn lookup(name: &str) -> Option<ConnectVar> {
        match name {
            "connect_host" => Some(ConnectVar::Host),
            "connect_port" => Some(ConnectVar::Port),
            "connect_addr" => Some(ConnectVar::Addr),
            _ => None,
        }
    }
}
