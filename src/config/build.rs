//! Gives each directive its meaning: where it may appear, how many arguments it takes, what
//! they must look like, and which field of [`Config`] it sets.
//!
//! Directives that matter to a web server but not to a forward proxy (`root`, `index`, ...) are
//! accepted with a warning so that a pasted nginx `server` block loads. Directives that would
//! restrict who may use the proxy (`allow`, `auth_basic`, ...) are refused until sluice implements
//! them: ignoring them would silently run a more open proxy than the operator wrote.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::error::{ConfigError, Origin};
use super::syntax::Directive;
use super::values::{
    ListenError, parse_flag, parse_ip, parse_ip_and_port, parse_listen, parse_port, parse_size,
    parse_time,
};
use super::{
    Config, ConnectVar, Forwarding, HeaderVar, Listen, Location, LocationMatch, PortList,
    ResolverSettings, Server, SetHeader, StatusListen,
};
use crate::access::htpasswd::Users;
use crate::access::{Cidr, ClientRules, DestinationRule, DestinationRules, HostPattern, Matcher};
use crate::access_log::{AccessLog, Destination, Escape, LogFormat, Sink};
use crate::request::Limits;
use crate::template::Template;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Main,
    Http,
    Server,
    Location,
}

const MAIN: &[Context] = &[Context::Main];
const HTTP_SERVER: &[Context] = &[Context::Http, Context::Server];
const SERVER: &[Context] = &[Context::Server];
const MAIN_HTTP: &[Context] = &[Context::Main, Context::Http];
const HTTP_SERVER_LOCATION: &[Context] = &[Context::Http, Context::Server, Context::Location];
const ANYWHERE: &[Context] = &[
    Context::Main,
    Context::Http,
    Context::Server,
    Context::Location,
];

/// What sluice does with a directive it knows.
#[derive(Clone, Copy)]
enum Role {
    /// It sets something; the context's builder handles it.
    Used,
    /// Accepted with a warning giving this reason.
    Ignored(&'static str),
    /// Refused with this reason.
    Unsupported(&'static str),
}

struct Spec {
    name: &'static str,
    contexts: &'static [Context],
    block: bool,
    /// Allowed argument counts, inclusive.
    args: (usize, usize),
    /// May appear at most once per block.
    unique: bool,
    role: Role,
}

const MANY: usize = usize::MAX;

/// The longest time any directive accepts.
const MAX_TIME: Duration = Duration::from_secs(365 * 24 * 3600);

const fn used(
    name: &'static str,
    contexts: &'static [Context],
    args: (usize, usize),
    unique: bool,
) -> Spec {
    Spec {
        name,
        contexts,
        block: false,
        args,
        unique,
        role: Role::Used,
    }
}

const fn block(name: &'static str, contexts: &'static [Context], args: (usize, usize)) -> Spec {
    Spec {
        name,
        contexts,
        block: true,
        args,
        unique: false,
        role: Role::Used,
    }
}

const fn ignored(name: &'static str, block: bool, why: &'static str) -> Spec {
    Spec {
        name,
        contexts: if block { MAIN } else { ANYWHERE },
        block,
        args: (0, MANY),
        unique: false,
        role: Role::Ignored(why),
    }
}

const fn unsupported(name: &'static str, why: &'static str) -> Spec {
    Spec {
        name,
        contexts: ANYWHERE,
        block: false,
        args: (0, MANY),
        unique: false,
        role: Role::Unsupported(why),
    }
}

/// Every directive sluice knows.
const SPECS: &[Spec] = &[
    block("http", MAIN, (0, 0)),
    block("server", &[Context::Main, Context::Http], (0, 0)),
    block("location", SERVER, (1, 2)),
    used("listen", SERVER, (1, MANY), false),
    used("proxy_connect", SERVER, (0, 0), true),
    used("proxy_connect_allow", HTTP_SERVER, (1, MANY), true),
    used("proxy_connect_connect_timeout", HTTP_SERVER, (1, 1), true),
    used("proxy_connect_data_timeout", HTTP_SERVER, (1, 1), true),
    used("proxy_connect_read_timeout", HTTP_SERVER, (1, 1), true),
    used("proxy_connect_send_timeout", HTTP_SERVER, (1, 1), true),
    used("proxy_connect_response", HTTP_SERVER, (1, 1), true),
    used("proxy_connect_address", HTTP_SERVER, (1, 1), true),
    used("proxy_connect_bind", HTTP_SERVER, (1, 2), true),
    used("resolver", HTTP_SERVER, (1, MANY), true),
    used("resolver_timeout", HTTP_SERVER, (1, 1), true),
    used("client_header_timeout", HTTP_SERVER, (1, 1), true),
    used("client_body_timeout", HTTP_SERVER, (1, 1), true),
    used("send_timeout", HTTP_SERVER, (1, 1), true),
    used("keepalive_timeout", HTTP_SERVER, (1, 2), true),
    used("proxy_http_allow", HTTP_SERVER, (1, MANY), true),
    used("underscores_in_headers", HTTP_SERVER, (1, 1), true),
    used("proxy_pass", &[Context::Location], (1, 1), true),
    used("proxy_set_header", HTTP_SERVER_LOCATION, (2, 2), false),
    used("proxy_connect_timeout", HTTP_SERVER_LOCATION, (1, 1), true),
    used("proxy_read_timeout", HTTP_SERVER_LOCATION, (1, 1), true),
    used("proxy_send_timeout", HTTP_SERVER_LOCATION, (1, 1), true),
    used("proxy_via", HTTP_SERVER_LOCATION, (1, 1), true),
    used("proxy_http_version", HTTP_SERVER_LOCATION, (1, 1), true),
    ignored("events", true, "sluice sizes its own event loop"),
    ignored("root", false, "a forward proxy serves no files"),
    ignored("index", false, "a forward proxy serves no files"),
    ignored(
        "server_name",
        false,
        "a forward proxy is chosen by its listen address, not by name",
    ),
    ignored(
        "worker_processes",
        false,
        "sluice is one multi-threaded process",
    ),
    ignored(
        "worker_rlimit_nofile",
        false,
        "sluice raises its own file limit",
    ),
    ignored("user", false, "run sluice as the user it should be"),
    ignored("pid", false, "sluice runs in the foreground"),
    ignored("daemon", false, "sluice runs in the foreground"),
    ignored("master_process", false, "sluice is one process"),
    ignored(
        "error_log",
        false,
        "sluice logs to standard error; RUST_LOG sets the level",
    ),
    ignored("sendfile", false, "a forward proxy serves no files"),
    ignored("tcp_nopush", false, "a forward proxy serves no files"),
    ignored("tcp_nodelay", false, "sluice always sets TCP_NODELAY"),
    ignored("proxy_buffering", false, "sluice always streams bodies"),
    ignored(
        "proxy_request_buffering",
        false,
        "sluice always streams bodies",
    ),
    used("access_log", HTTP_SERVER_LOCATION, (1, MANY), false),
    // In nginx, http only; servers may stand at the top level in sluice, so main too.
    used("log_format", MAIN_HTTP, (2, MANY), false),
    used("status_listen", MAIN_HTTP, (1, 1), true),
    used("allow", HTTP_SERVER_LOCATION, (1, 1), false),
    used("deny", HTTP_SERVER_LOCATION, (1, 1), false),
    used("auth_basic", HTTP_SERVER_LOCATION, (1, 1), true),
    used("auth_basic_user_file", HTTP_SERVER_LOCATION, (1, 1), true),
    used("destination_allow", HTTP_SERVER, (1, MANY), false),
    used("destination_deny", HTTP_SERVER, (1, MANY), false),
    used(
        "max_connections",
        &[Context::Main, Context::Http],
        (1, 1),
        true,
    ),
    used(
        "shutdown_timeout",
        &[Context::Main, Context::Http],
        (1, 1),
        true,
    ),
    used("max_connections_per_client", HTTP_SERVER, (1, 1), true),
    used("large_client_header_buffers", HTTP_SERVER, (2, 2), true),
    unsupported(
        "include",
        "is not supported yet; put everything in one file",
    ),
];

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Builds the typed configuration from a parsed file.
pub fn build(tree: &[Directive], file: &str) -> Result<Config, ConfigError> {
    let mut builder = Builder {
        file,
        warnings: Vec::new(),
        max_connections: None,
        shutdown_timeout: Duration::from_secs(30),
        status_listen: None,
        formats: HashMap::from([
            ("combined".to_string(), Arc::new(LogFormat::combined())),
            ("sluice".to_string(), Arc::new(LogFormat::sluice())),
        ]),
    };
    builder.log_formats(tree)?;
    let mut servers = Vec::new();
    let main_defaults = Server::defaults(builder.origin(1));
    for directive in builder.checked(tree, Context::Main)? {
        match directive.name.as_str() {
            "server" => servers.push(builder.server(directive, &main_defaults)?),
            "http" => builder.http(directive, &mut servers)?,
            "max_connections" => builder.max_connections = Some(builder.count(directive)?),
            "shutdown_timeout" => builder.shutdown_timeout = builder.time(directive)?,
            "status_listen" => builder.status_listen(directive)?,
            "log_format" => {} // read first, by `log_formats`
            _ => return Err(builder.not_allowed(directive)),
        }
    }
    if servers.is_empty() {
        return Err(ConfigError::whole_file(format!(
            "no \"server\" block in {file}: sluice needs at least one, with a \"listen\" directive"
        )));
    }
    check_unique_listeners(&servers, file)?;
    if let Some(status) = &builder.status_listen
        && let Some(listen) = servers
            .iter()
            .flat_map(|s| &s.listen)
            .find(|l| l.addr == status.addr && l.addr.port() != 0)
    {
        return Err(ConfigError::at(
            file,
            status.origin.line,
            format!(
                "status_listen {} is also a proxy listener (listen in {})",
                status.addr, listen.origin
            ),
        ));
    }
    Ok(Config {
        servers,
        max_connections: builder.max_connections,
        shutdown_timeout: builder.shutdown_timeout,
        status_listen: builder.status_listen,
        warnings: builder.warnings,
    })
}

/// Two blocks may not claim the same address: sluice would not know whose policy applies.
fn check_unique_listeners(servers: &[Server], file: &str) -> Result<(), ConfigError> {
    let mut seen: HashMap<SocketAddr, &Origin> = HashMap::new();
    for listen in servers.iter().flat_map(|s| &s.listen) {
        if listen.addr.port() == 0 {
            continue; // each gets its own free port
        }
        if let Some(first) = seen.insert(listen.addr, &listen.origin) {
            return Err(ConfigError::at(
                file,
                listen.origin.line,
                format!("a duplicate listen {} (first in {first})", listen.addr),
            ));
        }
    }
    Ok(())
}

/// Which list-valued settings a level has written itself: in nginx, a level with any entry of
/// its own inherits none from the level above.
#[derive(Default)]
struct Own {
    headers: bool,
    clients: bool,
    destinations: bool,
    /// `access_log` directives of this level; `off` empties the level.
    logs: Option<Vec<Sink>>,
    logs_off: bool,
}

impl Own {
    /// The access log of a level that started from `inherited`.
    fn access_log(&mut self, inherited: &AccessLog) -> AccessLog {
        match self.logs.take() {
            None => inherited.clone(),
            Some(_) if self.logs_off => AccessLog::default(),
            Some(sinks) => AccessLog::new(sinks),
        }
    }
}

struct Builder<'a> {
    file: &'a str,
    warnings: Vec<String>,
    /// `max_connections`, which is process-wide.
    max_connections: Option<usize>,
    /// `shutdown_timeout`, also process-wide.
    shutdown_timeout: Duration,
    /// `status_listen`, process-wide.
    status_listen: Option<StatusListen>,
    /// `log_format`s by name, the predefined ones included.
    formats: HashMap<String, Arc<LogFormat>>,
}

impl Builder<'_> {
    fn origin(&self, line: u32) -> Origin {
        Origin {
            file: self.file.to_string(),
            line,
        }
    }

    /// For a directive that passed [`SPECS`] but that no handler of its context takes: a gap
    /// in this file, reported as an error rather than a panic.
    fn not_allowed(&self, directive: &Directive) -> ConfigError {
        self.error(
            directive,
            format!("\"{}\" directive is not allowed here", directive.name),
        )
    }

    fn error(&self, directive: &Directive, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, directive.line, message)
    }

    /// Checks every directive of a block against [`SPECS`] and returns the ones its context
    /// must act on. Ignored ones become warnings; the rest fail with nginx's wording.
    fn checked<'t>(
        &mut self,
        block: &'t [Directive],
        context: Context,
    ) -> Result<Vec<&'t Directive>, ConfigError> {
        let mut used = Vec::new();
        let mut seen = HashSet::new();
        for directive in block {
            let name = directive.name.as_str();
            let Some(spec) = spec(name) else {
                return Err(self.error(directive, format!("unknown directive \"{name}\"")));
            };
            if !spec.contexts.contains(&context) {
                return Err(self.error(
                    directive,
                    format!("\"{name}\" directive is not allowed here"),
                ));
            }
            match (spec.block, directive.block.is_some()) {
                (true, false) => {
                    return Err(self.error(
                        directive,
                        format!("directive \"{name}\" has no opening \"{{\""),
                    ));
                }
                (false, true) => {
                    return Err(self.error(
                        directive,
                        format!("directive \"{name}\" is not terminated by \";\""),
                    ));
                }
                _ => {}
            }
            let count = directive.args.len();
            if count < spec.args.0 || count > spec.args.1 {
                return Err(self.error(
                    directive,
                    format!("invalid number of arguments in \"{name}\" directive"),
                ));
            }
            if spec.unique && !seen.insert(name) {
                return Err(self.error(directive, format!("\"{name}\" directive is duplicate")));
            }
            match spec.role {
                Role::Used => used.push(directive),
                Role::Ignored(why) => self.warnings.push(format!(
                    "\"{name}\" directive is ignored ({why}) in {}",
                    self.origin(directive.line)
                )),
                Role::Unsupported(why) => {
                    return Err(self.error(directive, format!("\"{name}\" directive {why}")));
                }
            }
        }
        Ok(used)
    }

    /// `http { }`: settings here are the defaults of every server inside, wherever they appear
    /// in the block (as in nginx, where merging happens after parsing).
    fn http(&mut self, http: &Directive, servers: &mut Vec<Server>) -> Result<(), ConfigError> {
        let body = http.block.as_deref().unwrap_or_default();
        let directives = self.checked(body, Context::Http)?;
        let mut defaults = Server::defaults(self.origin(http.line));
        let mut own = Own::default();
        for directive in directives.iter().filter(|d| d.name != "server") {
            match directive.name.as_str() {
                "max_connections" => self.max_connections = Some(self.count(directive)?),
                "shutdown_timeout" => self.shutdown_timeout = self.time(directive)?,
                "status_listen" => self.status_listen(directive)?,
                "log_format" => {} // read first, by `log_formats`
                _ => self.setting(&mut defaults, directive, &mut own)?,
            }
        }
        defaults.access_log = own.access_log(&defaults.access_log);
        for directive in directives.iter().filter(|d| d.name == "server") {
            servers.push(self.server(directive, &defaults)?);
        }
        Ok(())
    }

    fn server(&mut self, block: &Directive, defaults: &Server) -> Result<Server, ConfigError> {
        let mut server = defaults.clone();
        server.origin = self.origin(block.line);
        let body = block.block.as_deref().unwrap_or_default();
        let directives = self.checked(body, Context::Server)?;
        // Server-level settings first, wherever they stand: locations inherit them.
        let mut own = Own::default();
        for directive in directives.iter().filter(|d| d.name != "location") {
            match directive.name.as_str() {
                "listen" => self.listen(&mut server, directive)?,
                "proxy_connect" => server.proxy_connect = true,
                _ => self.setting(&mut server, directive, &mut own)?,
            }
        }
        server.access_log = own.access_log(&server.access_log);
        for directive in directives.iter().filter(|d| d.name == "location") {
            let location = self.location(directive, &server.forwarding, &server.access_log)?;
            if server
                .locations
                .iter()
                .any(|l| l.pattern == location.pattern)
            {
                let shown = directive
                    .args
                    .last()
                    .map(String::as_str)
                    .unwrap_or_default();
                return Err(self.error(directive, format!("duplicate location \"{shown}\"")));
            }
            server.locations.push(location);
        }
        if server.auth_realm.is_some() && server.auth_users.is_none() {
            return Err(self.error(
                block,
                "\"auth_basic\" needs \"auth_basic_user_file\" in the same server block or above it",
            ));
        }
        if server.listen.is_empty() {
            return Err(self.error(
                block,
                "no \"listen\" directive in the \"server\" block (sluice needs an address to listen on)",
            ));
        }
        Ok(server)
    }

    fn listen(&mut self, server: &mut Server, directive: &Directive) -> Result<(), ConfigError> {
        let address = &directive.args[0];
        if address.starts_with("unix:") {
            return Err(self.error(
                directive,
                format!(
                    "unix sockets in \"{address}\" of the \"listen\" directive are not supported"
                ),
            ));
        }
        let addrs = parse_listen(address).map_err(|e| {
            let what = match e {
                ListenError::InvalidPort => "invalid port",
                ListenError::HostNotFound => "host not found",
            };
            self.error(
                directive,
                format!("{what} in \"{address}\" of the \"listen\" directive"),
            )
        })?;
        let mut backlog = None;
        let mut reuseport = false;
        for param in &directive.args[1..] {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (param.as_str(), None),
            };
            match (key, value) {
                ("default_server" | "default" | "bind", None) => {}
                ("reuseport", None) => reuseport = true,
                ("backlog", Some(v)) => {
                    backlog =
                        Some(v.parse::<u32>().map_err(|_| {
                            self.error(directive, format!("invalid backlog \"{v}\""))
                        })?);
                }
                ("ipv6only", Some("on")) => {}
                ("ipv6only", _) => {
                    return Err(self.error(
                        directive,
                        "\"ipv6only=off\" is not supported: an IPv6 listener serves only IPv6; \
                         add a second \"listen\" for the IPv4 address",
                    ));
                }
                ("ssl" | "http2" | "http3" | "quic" | "proxy_protocol", _) => {
                    return Err(self.error(
                        directive,
                        format!(
                            "the \"{param}\" parameter of the \"listen\" directive is not supported yet \
                             (sluice listens for plain-text proxy requests; HTTPS sites are still reached through CONNECT)"
                        ),
                    ));
                }
                ("deferred" | "fastopen" | "so_keepalive" | "rcvbuf" | "sndbuf" | "setfib", _) => {
                    self.warnings.push(format!(
                        "the \"{key}\" parameter of the \"listen\" directive is ignored in {}",
                        self.origin(directive.line)
                    ));
                }
                _ => {
                    return Err(self.error(directive, format!("invalid parameter \"{param}\"")));
                }
            }
        }
        for addr in addrs {
            if addr.ip().is_unspecified() {
                self.warnings.push(format!(
                    "{addr} accepts every host that can reach it: anyone may use this proxy; \
                     restrict it with a firewall or listen on a specific address, in {}",
                    self.origin(directive.line)
                ));
            }
            server.listen.push(Listen {
                addr,
                origin: self.origin(directive.line),
                backlog,
                reuseport,
            });
        }
        Ok(())
    }

    fn location(
        &mut self,
        block: &Directive,
        inherited: &Forwarding,
        inherited_log: &AccessLog,
    ) -> Result<Location, ConfigError> {
        let pattern = match block.args.as_slice() {
            [path] if path.starts_with('@') => {
                return Err(self.error(block, "named locations are not supported"));
            }
            [path] => LocationMatch::Prefix(path.clone()),
            [modifier, path] if modifier == "^~" => LocationMatch::Prefix(path.clone()),
            [modifier, path] if modifier == "=" => LocationMatch::Exact(path.clone()),
            [modifier, _] if modifier == "~" || modifier == "~*" => {
                return Err(self.error(block, "regular expression locations are not supported"));
            }
            _ => {
                return Err(self.error(
                    block,
                    format!("invalid location modifier \"{}\"", block.args[0]),
                ));
            }
        };
        let mut location = Location {
            pattern,
            origin: self.origin(block.line),
            proxy_pass: false,
            forwarding: inherited.clone(),
            access_log: AccessLog::default(),
        };
        let mut own = Own::default();
        let body = block.block.as_deref().unwrap_or_default();
        for directive in self.checked(body, Context::Location)? {
            match directive.name.as_str() {
                "proxy_pass" => {
                    let target = &directive.args[0];
                    if !is_forward_proxy_pass(target) {
                        return Err(self.error(
                            directive,
                            format!(
                                "proxy_pass \"{target}\" is not supported: sluice forwards each request to \
                                 the host it names; write \"proxy_pass http://$http_host$request_uri;\""
                            ),
                        ));
                    }
                    location.proxy_pass = true;
                }
                name @ ("allow" | "deny" | "auth_basic" | "auth_basic_user_file") => {
                    return Err(self.error(
                        directive,
                        format!(
                            "\"{name}\" in a location is not supported: sluice applies it to every request \
                             of the server, CONNECT included; move it to the server block"
                        ),
                    ));
                }
                "access_log" => self.access_log(directive, &mut own)?,
                _ => self.forwarding_setting(&mut location.forwarding, directive, &mut own)?,
            }
        }
        location.access_log = own.access_log(inherited_log);
        Ok(location)
    }

    /// The `proxy_*` directives of plain-HTTP forwarding, valid in http, server and location.
    /// `own` tracks nginx's rule that a level with any `proxy_set_header` of its own inherits
    /// none from the level above.
    fn forwarding_setting(
        &mut self,
        forwarding: &mut Forwarding,
        directive: &Directive,
        own: &mut Own,
    ) -> Result<(), ConfigError> {
        let arg = directive.args[0].as_str();
        match directive.name.as_str() {
            "proxy_set_header" => {
                if !std::mem::replace(&mut own.headers, true) {
                    forwarding.set_headers.clear();
                }
                let name = arg.to_string();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(self.error(directive, format!("invalid header name \"{name}\"")));
                }
                if splits_a_line(&directive.args[1]) {
                    return Err(self.error(
                        directive,
                        format!("invalid value in \"proxy_set_header\" directive: {SPLITS_A_LINE}"),
                    ));
                }
                let value = Template::parse(&directive.args[1], HeaderVar::lookup)
                    .map_err(|reason| self.error(directive, reason))?;
                forwarding.set_headers.push(SetHeader { name, value });
            }
            "proxy_connect_timeout" => forwarding.connect_timeout = self.time(directive)?,
            "proxy_read_timeout" => forwarding.read_timeout = self.time(directive)?,
            "proxy_send_timeout" => forwarding.send_timeout = self.time(directive)?,
            "proxy_via" => {
                forwarding.via = parse_flag(arg).ok_or_else(|| {
                    self.error(directive, format!("invalid value \"{arg}\" in \"proxy_via\" directive, it must be \"on\" or \"off\""))
                })?;
            }
            "proxy_http_version" => match arg {
                "1.1" => {}
                "1.0" => self.warnings.push(format!(
                    "\"proxy_http_version 1.0\" is ignored: sluice speaks HTTP/1.1 to origins so that their connections can be reused, in {}",
                    self.origin(directive.line)
                )),
                _ => return Err(self.error(directive, format!("invalid value \"{arg}\" in \"proxy_http_version\" directive"))),
            },
            _ => return Err(self.not_allowed(directive)),
        }
        Ok(())
    }

    /// Directives that may stand in `http` or `server` and set one field.
    fn setting(
        &mut self,
        server: &mut Server,
        directive: &Directive,
        own: &mut Own,
    ) -> Result<(), ConfigError> {
        let arg = directive
            .args
            .first()
            .map(String::as_str)
            .unwrap_or_default();
        match directive.name.as_str() {
            "access_log" => self.access_log(directive, own)?,
            "proxy_connect_allow" => server.connect_ports = self.port_list(directive)?,
            "proxy_http_allow" => server.http_ports = self.port_list(directive)?,
            "allow" | "deny" => {
                if !std::mem::replace(&mut own.clients, true) {
                    server.clients = ClientRules::default();
                }
                let range = match arg {
                    "all" => None,
                    _ => Some(Cidr::parse(arg).map_err(|why| {
                        self.error(directive, format!("invalid parameter \"{arg}\" ({why})"))
                    })?),
                };
                server.clients.push(
                    directive.name == "allow",
                    range,
                    self.origin(directive.line),
                );
            }
            "destination_allow" | "destination_deny" => {
                if !std::mem::replace(&mut own.destinations, true) {
                    server.destinations = DestinationRules::default();
                }
                for arg in &directive.args {
                    let matcher = self.destination(directive, arg)?;
                    server.destinations.push(DestinationRule {
                        allow: directive.name == "destination_allow",
                        matcher,
                        origin: self.origin(directive.line),
                    });
                }
            }
            "auth_basic" => {
                // The realm is sent in every `Proxy-Authenticate` header.
                if splits_a_line(arg) {
                    return Err(self.error(
                        directive,
                        format!("invalid realm in \"auth_basic\" directive: {SPLITS_A_LINE}"),
                    ));
                }
                server.auth_realm = (arg != "off").then(|| arg.to_string());
            }
            "auth_basic_user_file" => {
                let path = self.relative_path(arg);
                let (users, warnings) = Users::load(&path).map_err(|error| {
                    self.error(
                        directive,
                        format!("in the \"auth_basic_user_file\" directive: {error}"),
                    )
                })?;
                self.warnings.extend(warnings);
                server.auth_users = Some(users);
            }
            "max_connections_per_client" => {
                server.max_connections_per_client = Some(self.count(directive)?)
            }
            "large_client_header_buffers" => {
                let number = self.count(directive)?;
                let size = parse_size(&directive.args[1])
                    .filter(|&s| (1024..=1 << 20).contains(&s))
                    .ok_or_else(|| {
                        self.error(
                            directive,
                            format!(
                                "invalid size \"{}\" in \"large_client_header_buffers\" (1k to 1m)",
                                directive.args[1]
                            ),
                        )
                    })?;
                server.limits = Limits {
                    line: size,
                    header_line: size,
                    head: number.saturating_mul(size).min(1 << 20),
                };
            }
            "client_body_timeout" => server.client_body_timeout = self.time(directive)?,
            "send_timeout" => server.send_timeout = self.time(directive)?,
            "keepalive_timeout" => {
                server.keepalive_timeout = self.time(directive)?;
                // nginx's optional second argument sets `Keep-Alive: timeout=`; sluice sends no
                // Keep-Alive field, but a bad value is still an error.
                if directive.args.len() == 2 {
                    self.time_arg(directive, 1)?;
                }
            }
            "proxy_set_header"
            | "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "proxy_send_timeout"
            | "proxy_via"
            | "proxy_http_version" => {
                self.forwarding_setting(&mut server.forwarding, directive, own)?
            }
            "underscores_in_headers" => {
                let arg = directive.args[0].as_str();
                server.underscores_in_headers = parse_flag(arg).ok_or_else(|| {
                    self.error(directive, format!("invalid value \"{arg}\" in \"underscores_in_headers\" directive, it must be \"on\" or \"off\""))
                })?;
            }
            "proxy_connect_connect_timeout" => server.connect_timeout = self.time(directive)?,
            "proxy_connect_data_timeout" => server.data_timeout = self.time(directive)?,
            "proxy_connect_read_timeout" => {
                server.data_timeout = self.time(directive)?;
                self.warnings.push(format!(
                    "\"proxy_connect_read_timeout\" is deprecated, use \"proxy_connect_data_timeout\" in {}",
                    self.origin(directive.line)
                ));
            }
            "proxy_connect_send_timeout" => {
                self.time(directive)?;
                self.warnings.push(format!(
                    "\"proxy_connect_send_timeout\" has no function (as in the proxy_connect module); \
                     \"proxy_connect_data_timeout\" bounds both directions in {}",
                    self.origin(directive.line)
                ));
            }
            "proxy_connect_response" => {
                server.connect_response = Some(self.connect_response(directive)?);
            }
            "proxy_connect_address" => {
                server.connect_address = match arg {
                    "off" => None,
                    _ if arg.contains('$') => {
                        return Err(self.error(directive, "variables in \"proxy_connect_address\" are not supported"));
                    }
                    _ => Some(parse_ip_and_port(arg).ok_or_else(|| {
                        self.error(
                            directive,
                            format!("invalid address \"{arg}\" in \"proxy_connect_address\" directive: an IP address, optionally with a port, is needed"),
                        )
                    })?),
                };
            }
            "proxy_connect_bind" => {
                if directive.args.get(1).is_some() {
                    return Err(self.error(
                        directive,
                        format!(
                            "the \"{}\" parameter of \"proxy_connect_bind\" is not supported",
                            directive.args[1]
                        ),
                    ));
                }
                server.connect_bind = match arg {
                    "off" => None,
                    _ if arg.contains('$') => {
                        return Err(self.error(directive, "variables in \"proxy_connect_bind\" are not supported"));
                    }
                    _ => Some(parse_ip(arg).ok_or_else(|| {
                        self.error(
                            directive,
                            format!("invalid address \"{arg}\" in \"proxy_connect_bind\" directive: an IP address is needed"),
                        )
                    })?),
                };
            }
            "resolver" => server.resolver = Some(self.resolver(directive)?),
            "resolver_timeout" => server.resolver_timeout = self.time(directive)?,
            "client_header_timeout" => server.client_header_timeout = self.time(directive)?,
            _ => return Err(self.not_allowed(directive)),
        }
        Ok(())
    }

    /// Reads every `log_format` of the main context and of `http` blocks before anything else,
    /// so an `access_log` may name a format wherever it is defined. Misplaced or malformed
    /// ones are reported by the main pass, with the other directives of their block.
    fn log_formats(&mut self, tree: &[Directive]) -> Result<(), ConfigError> {
        let http_bodies = tree
            .iter()
            .filter(|d| d.name == "http")
            .filter_map(|d| d.block.as_deref());
        let formats = tree
            .iter()
            .chain(http_bodies.flatten())
            .filter(|d| d.name == "log_format" && d.block.is_none() && d.args.len() >= 2);
        for directive in formats {
            let name = &directive.args[0];
            if self.formats.contains_key(name) {
                return Err(self.error(
                    directive,
                    format!("duplicate \"log_format\" name \"{name}\""),
                ));
            }
            let mut strings = &directive.args[1..];
            let mut escape = Escape::Default;
            if let Some(value) = strings[0].strip_prefix("escape=") {
                escape = Escape::parse(value).ok_or_else(|| {
                    self.error(
                        directive,
                        format!("unknown log format escaping \"{value}\""),
                    )
                })?;
                strings = &strings[1..];
            }
            if strings.is_empty() {
                return Err(self.error(
                    directive,
                    "invalid number of arguments in \"log_format\" directive",
                ));
            }
            let format = LogFormat::parse(name, escape, &strings.concat())
                .map_err(|reason| self.error(directive, reason))?;
            self.formats.insert(name.clone(), Arc::new(format));
        }
        Ok(())
    }

    /// `access_log PATH [FORMAT] [buffer=SIZE] [flush=TIME]` or `access_log off`, at any level.
    fn access_log(&self, directive: &Directive, own: &mut Own) -> Result<(), ConfigError> {
        let args = &directive.args;
        let logs = own.logs.get_or_insert_with(Vec::new);
        let path = args[0].as_str();
        if path == "off" {
            if args.len() > 1 {
                return Err(self.error(directive, format!("invalid parameter \"{}\"", args[1])));
            }
            own.logs_off = true;
            return Ok(());
        }
        let destination = match path {
            "stderr" => Destination::Stderr,
            _ if path.starts_with("syslog:") => {
                return Err(self.error(directive, "logging to syslog is not supported; log to \"stderr\" and let the service manager collect it"));
            }
            _ if path.contains('$') => {
                return Err(self.error(
                    directive,
                    "variables in \"access_log\" paths are not supported",
                ));
            }
            _ => Destination::File(self.relative_path(path)),
        };
        let mut format = self.formats.get("combined").cloned();
        for (index, arg) in args.iter().enumerate().skip(1) {
            let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
            match key {
                "buffer" if parse_size(value).is_some_and(|s| s > 0) => {}
                "flush" if parse_time(value).is_some_and(|t| !t.is_zero()) => {}
                "gzip" | "if" => {
                    return Err(self.error(
                        directive,
                        format!("the \"{key}\" parameter of \"access_log\" is not supported"),
                    ));
                }
                _ if index == 1 && !arg.contains('=') => {
                    format = Some(self.formats.get(arg.as_str()).cloned().ok_or_else(|| {
                        self.error(directive, format!("unknown log format \"{arg}\""))
                    })?);
                }
                _ => return Err(self.error(directive, format!("invalid parameter \"{arg}\""))),
            }
        }
        logs.push(Sink {
            destination: Arc::new(destination),
            format: format.expect("combined is predefined"),
            origin: self.origin(directive.line),
        });
        Ok(())
    }

    /// `status_listen ADDR:PORT`: an address literal and a port, as in `127.0.0.1:9145`.
    fn status_listen(&mut self, directive: &Directive) -> Result<(), ConfigError> {
        let text = &directive.args[0];
        let addr: SocketAddr = text.parse().map_err(|_| {
            self.error(
                directive,
                format!(
                    "invalid address \"{text}\" in \"status_listen\" directive \
                     (an IP address and a port, such as 127.0.0.1:9145 or [::1]:9145, is needed)"
                ),
            )
        })?;
        if self.status_listen.is_some() {
            return Err(self.error(directive, "\"status_listen\" directive is duplicate"));
        }
        self.status_listen = Some(StatusListen {
            addr,
            origin: self.origin(directive.line),
        });
        Ok(())
    }

    /// A positive count, such as a connection limit.
    fn count(&self, directive: &Directive) -> Result<usize, ConfigError> {
        let text = &directive.args[0];
        text.parse::<usize>()
            .ok()
            .filter(|&n| n > 0 && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                self.error(
                    directive,
                    format!(
                        "invalid value \"{text}\" in \"{}\" directive",
                        directive.name
                    ),
                )
            })
    }

    /// One argument of `destination_allow` / `destination_deny`: `all`, an address or CIDR, or
    /// a host pattern (`example.com`, `*.example.com`, `.example.com`).
    fn destination(&self, directive: &Directive, arg: &str) -> Result<Matcher, ConfigError> {
        if arg == "all" {
            return Ok(Matcher::All);
        }
        let looks_numeric =
            arg.contains('/') || arg.contains(':') || arg.parse::<std::net::IpAddr>().is_ok();
        if looks_numeric {
            return Cidr::parse(arg).map(Matcher::Addr).map_err(|why| {
                self.error(
                    directive,
                    format!(
                        "invalid address \"{arg}\" in \"{}\" directive ({why})",
                        directive.name
                    ),
                )
            });
        }
        let bare = arg
            .strip_prefix("*.")
            .or_else(|| arg.strip_prefix('.'))
            .unwrap_or(arg);
        let valid = !bare.is_empty()
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(self.error(
                directive,
                format!(
                    "invalid host pattern \"{arg}\" in \"{}\" directive",
                    directive.name
                ),
            ));
        }
        Ok(Matcher::Host(HostPattern::parse(arg)))
    }

    /// A path as written, relative ones taken from the config file's directory.
    fn relative_path(&self, text: &str) -> std::path::PathBuf {
        let path = std::path::Path::new(text);
        match std::path::Path::new(self.file).parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The directive's first argument as a time (see [`Builder::time_arg`]).
    fn time(&self, directive: &Directive) -> Result<Duration, ConfigError> {
        self.time_arg(directive, 0)
    }

    /// A time between 1 ms and [`MAX_TIME`], in nginx's message style when it is not one.
    /// The bound keeps deadlines computed from it far from overflowing.
    fn time_arg(&self, directive: &Directive, index: usize) -> Result<Duration, ConfigError> {
        let text = &directive.args[index];
        match parse_time(text) {
            Some(time) if !time.is_zero() && time <= MAX_TIME => Ok(time),
            _ => Err(self.error(
                directive,
                format!(
                    "\"{}\" directive invalid value \"{text}\" (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)",
                    directive.name
                ),
            )),
        }
    }

    /// `all`, or ports and ranges. Every argument is checked, `all` or not, so a typo beside
    /// `all` still fails `-t`.
    fn port_list(&self, directive: &Directive) -> Result<PortList, ConfigError> {
        let mut ranges = Vec::new();
        let mut all = false;
        for arg in &directive.args {
            let invalid = || {
                self.error(
                    directive,
                    format!("invalid port \"{arg}\" in \"{}\" directive", directive.name),
                )
            };
            let range = match arg.split_once('-') {
                _ if arg == "all" => {
                    all = true;
                    continue;
                }
                Some((lo, hi)) => {
                    let (lo, hi) = (
                        parse_port(lo).ok_or_else(invalid)?,
                        parse_port(hi).ok_or_else(invalid)?,
                    );
                    if lo > hi {
                        return Err(invalid());
                    }
                    (lo, hi)
                }
                None => {
                    let port = parse_port(arg).ok_or_else(invalid)?;
                    (port, port)
                }
            };
            ranges.push(range);
        }
        Ok(if all {
            PortList::All
        } else {
            PortList::Ranges(ranges)
        })
    }

    fn connect_response(&self, directive: &Directive) -> Result<Template<ConnectVar>, ConfigError> {
        let text = &directive.args[0];
        if !text.ends_with("\r\n\r\n") {
            return Err(self.error(
                directive,
                "\"proxy_connect_response\" must be a whole response head ending in \"\\r\\n\\r\\n\"",
            ));
        }
        // The head's own line breaks are CRLF; a bare CR or LF, an empty line before the end
        // (the client would read what follows as tunnel data) or a NUL would be misread.
        let lines = &text[..text.len() - 4];
        if text.contains('\0')
            || lines
                .split("\r\n")
                .any(|l| l.is_empty() || l.contains(['\r', '\n']))
        {
            return Err(self.error(
                directive,
                "\"proxy_connect_response\" may break lines only with \"\\r\\n\", may not hold an \
                 empty line before its end, and may not contain NUL",
            ));
        }
        Template::parse(text, ConnectVar::lookup).map_err(|reason| self.error(directive, reason))
    }

    fn resolver(&self, directive: &Directive) -> Result<ResolverSettings, ConfigError> {
        let mut settings = ResolverSettings {
            servers: Vec::new(),
            valid: None,
            ipv4: true,
            ipv6: true,
        };
        for arg in &directive.args {
            let flag = |value: &str| {
                parse_flag(value)
                    .ok_or_else(|| self.error(directive, format!("invalid parameter \"{arg}\"")))
            };
            match arg.split_once('=') {
                Some(("valid", v)) => {
                    let valid = parse_time(v).filter(|t| !t.is_zero() && *t <= MAX_TIME);
                    settings.valid = Some(valid.ok_or_else(|| {
                        self.error(directive, format!("invalid parameter \"{arg}\""))
                    })?);
                }
                Some(("ipv4", v)) => settings.ipv4 = flag(v)?,
                Some(("ipv6", v)) => settings.ipv6 = flag(v)?,
                Some(("status_zone", _)) => {}
                Some(_) => {
                    return Err(self.error(directive, format!("invalid parameter \"{arg}\"")));
                }
                None => {
                    let (ip, port) = parse_ip_and_port(arg).ok_or_else(|| {
                        self.error(
                            directive,
                            format!("invalid address \"{arg}\" in \"resolver\" directive: a name server is given by its IP address, optionally with a port"),
                        )
                    })?;
                    settings
                        .servers
                        .push(SocketAddr::new(ip, port.unwrap_or(53)));
                }
            }
        }
        if settings.servers.is_empty() {
            return Err(self.error(
                directive,
                "no name server address in \"resolver\" directive",
            ));
        }
        if !settings.ipv4 && !settings.ipv6 {
            return Err(self.error(directive, "\"ipv4\" and \"ipv6\" cannot both be \"off\""));
        }
        Ok(settings)
    }
}

/// Why [`splits_a_line`] refuses a value.
const SPLITS_A_LINE: &str = "CR, LF and NUL are not allowed in a value sent in a header";

/// Whether a value written into a header line holds CR, LF or NUL: a line break would end the
/// header early and turn the rest into a header (or a request) of its own, and HTTP parsers
/// refuse NUL.
fn splits_a_line(value: &str) -> bool {
    value.contains(['\r', '\n', '\0'])
}

/// `http://$http_host$request_uri` and its `$host` variant: the forms that mean "forward to
/// wherever the request is going".
fn is_forward_proxy_pass(target: &str) -> bool {
    matches!(
        target,
        "http://$http_host$request_uri"
            | "http://$host$request_uri"
            | "http://$http_host"
            | "http://$host"
    )
}
