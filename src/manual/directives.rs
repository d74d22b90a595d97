//! One line per directive for the manual: its arguments, its default and what it does. The
//! directive's name, contexts and argument count come from its [`Spec`], so only this text is
//! written by hand; a unit test fails when a directive has no entry here, or an entry names no
//! directive.
//!
//! Ignored and refused directives need no entry: their [`Spec`] carries the reason.
//!
//! [`Spec`]: crate::config::directive::Spec

/// What the manual says about one directive.
pub struct Help {
    pub name: &'static str,
    /// The arguments, as written after the name.
    pub syntax: &'static str,
    /// The value in effect when the directive is not written.
    pub default: &'static str,
    /// What it does, in one line.
    pub meaning: &'static str,
}

const fn help(
    name: &'static str,
    syntax: &'static str,
    default: &'static str,
    meaning: &'static str,
) -> Help {
    Help {
        name,
        syntax,
        default,
        meaning,
    }
}

/// The entries, in the order the manual lists them.
#[rustfmt::skip]
pub const HELP: &[Help] = &[
    // The blocks and the process.
    help("http", "{ ... }", "-", "optional wrapper; its settings are the defaults of the servers inside"),
    help("server", "{ ... }", "-", "one proxy: its listeners and its policy; at least one is required"),
    help("location", "PREFIX | = PATH | ^~ PREFIX { ... }", "-", "which forwarded requests a proxy_pass covers (exact match, then longest prefix)"),
    help("listen", "ADDR:PORT | PORT | [V6]:PORT [default_server] [reuseport] [backlog=N] [proxy_protocol] [ssl] [http2]", "required", "where to accept clients; PORT alone is every IPv4 address; port 0 takes a free port; proxy_protocol: each connection starts with a PROXY header (v1 or v2); ssl: clients speak TLS to sluice (HTTPS proxy); http2: as http2 on"),
    help("max_connections", "N", "none", "client connections open at once in the whole process; past it new clients wait in the listen backlog"),
    help("max_connections_per_client", "N", "none", "client connections open at once from one address (then 503)"),
    help("shutdown_timeout", "TIME", "30s", "after SIGQUIT, how long open tunnels and requests may finish"),
    help("worker_processes", "N | auto", "auto", "threads serving connections, each with its own event loop; auto is one per core; read at start, not on reload"),
    help("status_listen", "ADDR:PORT", "off", "serve /metrics (Prometheus), /healthz and the live /status page and /status.json there, over plain HTTP"),
    help("status_allow", "ADDR | CIDR | all", "loopback only", "who may load /status and /status.json (first match wins; others get 403)"),
    help("status_deny", "ADDR | CIDR | all", "-", "who may not load /status and /status.json (first match wins)"),
    // The HTTPS listener (listen ... ssl).
    help("ssl_certificate", "PATH", "none", "PEM certificate of an ssl listener, leaf first, then its chain; required with listen ... ssl"),
    help("ssl_certificate_key", "PATH", "none", "PEM private key of ssl_certificate (PKCS#8, PKCS#1 or SEC1); it must match the certificate"),
    help("ssl_protocols", "TLSv1.2 | TLSv1.3 ...", "TLSv1.2 TLSv1.3", "TLS versions offered to clients"),
    help("ssl_client_certificate", "PATH", "none", "PEM CA certificates that client certificates must chain to (with ssl_verify_client)"),
    help("ssl_verify_client", "on | optional | off", "off", "ask clients for a certificate: on refuses a client without a valid one, optional records it"),
    help("ssl_handshake_timeout", "TIME", "10s", "time for a client to finish the TLS handshake (then closed)"),
    // Behind a load balancer (listen ... proxy_protocol).
    help("set_real_ip_from", "ADDR | CIDR", "none", "the balancers trusted to send PROXY headers; required with proxy_protocol; others are closed without an answer"),
    help("real_ip_header", "proxy_protocol", "proxy_protocol", "accepted for pasted nginx blocks; the PROXY header is the only source of the client address"),
    help("proxy_protocol_timeout", "TIME", "5s", "time for the whole PROXY header to arrive (then closed without an answer)"),
    // HTTP/2 from clients (docs/http2.md).
    help("http2", "on | off", "off", "serve HTTP/2 too: many CONNECT tunnels and requests on one connection (h2c by prior knowledge on a plain listener, beside HTTP/1.1)"),
    help("http2_max_concurrent_streams", "N", "128", "streams a client may have open at once on one HTTP/2 connection (more are refused with REFUSED_STREAM)"),
    // CONNECT tunnels.
    help("proxy_connect", "", "off", "serve CONNECT in this server"),
    help("proxy_connect_allow", "all | PORT | LO-HI ...", "443 563", "ports a CONNECT may reach"),
    help("proxy_connect_connect_timeout", "TIME", "60s", "bound on connecting upstream, all addresses together (then 504)"),
    help("proxy_connect_data_timeout", "TIME", "60s", "a tunnel with no byte moving either way for this long is closed"),
    help("proxy_connect_read_timeout", "TIME", "60s", "deprecated alias of proxy_connect_data_timeout (warns)"),
    help("proxy_connect_send_timeout", "TIME", "none", "accepted with a warning: it has no function, as in the nginx module"),
    help("proxy_connect_response", "\"TEXT\"", "200 head", "the whole success head, ending in \\r\\n\\r\\n; $connect_host, $connect_port, $connect_addr"),
    help("proxy_connect_address", "ADDRESS[:PORT] | off", "off", "dial this address instead of the resolved one; may be a name or hold variables (empty: the client's target)"),
    help("proxy_connect_bind", "IP | off", "off", "source address of upstream connections; may hold variables (CONNECT only)"),
    // nginx 1.31's tunnel module.
    help("tunnel_pass", "[ADDRESS]", "off", "serve CONNECT, to ADDRESS or $host:$request_port; no port list unless proxy_connect_allow is written"),
    help("tunnel_connect_timeout", "TIME", "60s", "as proxy_connect_connect_timeout"),
    help("tunnel_read_timeout", "TIME", "60s", "as proxy_connect_data_timeout"),
    help("tunnel_send_timeout", "TIME", "none", "accepted with a warning: tunnel_read_timeout bounds both directions"),
    help("tunnel_bind", "ADDRESS | off", "off", "source address of tunnels' upstream connections; may hold variables"),
    help("tunnel_buffer_size", "SIZE", "none", "accepted with a warning: sluice sizes its own buffers"),
    help("tunnel_socket_keepalive", "on | off", "off", "accepted with a warning: tunnel_read_timeout ends idle tunnels"),
    // nginx's rewrite module.
    help("map", "SOURCE $VAR { [hostnames;] [default V;] KEY V; ~RE V; ... }", "-", "a variable looked up from another, once per request when read; regex captures in V"),
    help("if", "(CONDITION) { ... }", "-", "set, return, break when $var, = != ~ ~* !~ !~* holds; regex captures $1..$9 inside"),
    help("set", "$VAR VALUE", "-", "give a variable a value in the rewrite phase, before access checks"),
    help("return", "CODE [TEXT] | CODE URL | URL", "-", "answer at once (CONNECT too, before any dial); 444 closes"),
    help("break", "", "-", "inside if: stop this level's rewrite directives"),
    // DNS.
    help("resolver", "ADDR[:PORT] ... [valid=TIME] [ipv4=on|off] [ipv6=on|off]", "system DNS", "name servers, tried in order; valid= overrides the TTLs"),
    help("resolver_timeout", "TIME", "30s", "bound on one name lookup (then 504)"),
    // Clients.
    help("client_header_timeout", "TIME", "60s", "time to send a whole request head (then 408)"),
    help("client_body_timeout", "TIME", "60s", "longest pause while a request body arrives (then 408)"),
    help("send_timeout", "TIME", "60s", "longest pause while a client takes a response"),
    help("keepalive_timeout", "TIME [TIME]", "75s", "idle time between two requests on a client connection, or without a stream on an HTTP/2 connection"),
    help("large_client_header_buffers", "N SIZE", "4 8k", "request line and each header line at most SIZE (414, 431); the head at most N*SIZE (431)"),
    help("underscores_in_headers", "on | off", "off", "keep request header fields whose names contain \"_\" (dropped when off, as in nginx)"),
    // Who may use the proxy, and where to.
    help("allow", "ADDR | CIDR | all", "allow all", "clients allowed; allow and deny rules are checked in order, the first match wins"),
    help("deny", "ADDR | CIDR | all", "allow all", "clients refused (403); see allow"),
    help("auth_basic", "\"REALM\" | off", "off", "require proxy credentials (407 with Proxy-Authenticate)"),
    help("auth_basic_user_file", "FILE", "-", "htpasswd file of the users auth_basic accepts; read at startup and on reload"),
    help("destination_allow", "all | CIDR | HOST | *.HOST | .HOST ...", "-", "destinations allowed; rules are checked in order, the first match wins"),
    help("destination_deny", "all | CIDR | HOST | *.HOST | .HOST ...", "-", "destinations refused (403); after the rules, a built-in list refuses loopback, link-local, multicast and cloud metadata addresses"),
    help("destination_mode", "enforce | report", "enforce", "report: a request a destination rule would deny is served, logged with $destination_verdict would-deny and counted; the built-in list still refuses"),
    // Per-user rules and bandwidth.
    help("users", "NAME ... { ... }", "-", "in a server with auth_basic: destination rules, proxy_connect_allow and limit_rate* for requests authenticated as these names"),
    help("limit_rate", "RATE", "0 (off)", "bytes per second for each direction of each tunnel and each forwarded response (512k, 4m)"),
    help("limit_rate_after", "SIZE", "0", "the first SIZE bytes of each tunnel direction or response move unlimited"),
    help("limit_rate_per_client", "RATE", "0 (off)", "bytes per second shared fairly by all connections of one client address, each direction"),
    help("limit_rate_per_user", "RATE", "0 (off)", "bytes per second shared fairly by all connections of one authenticated user, each direction"),
    // Plain-HTTP forwarding.
    help("proxy_pass", "http://$http_host$request_uri", "-", "forward plain-HTTP requests to the host in their URI (the only form)"),
    help("proxy_http_allow", "all | PORT | LO-HI ...", "all", "ports a forwarded request may reach"),
    help("proxy_set_header", "NAME VALUE", "-", "set a header field sent to the origin; an empty value removes it"),
    help("proxy_connect_timeout", "TIME", "60s", "bound on connecting to an origin for forwarding (then 504)"),
    help("proxy_read_timeout", "TIME", "60s", "longest wait for the origin's next bytes"),
    help("proxy_send_timeout", "TIME", "60s", "longest wait for the origin to take more bytes"),
    help("proxy_via", "on | off", "on", "add Via: 1.1 sluice to forwarded requests and responses"),
    help("proxy_ignore_client_abort", "on | off", "off", "on: keep waiting for the origin's answer after the client left (off ends the request, logged 499)"),
    help("proxy_http_version", "1.1", "1.1", "accepted; 1.0 warns, since sluice always speaks HTTP/1.1 upstream"),
    // Parent proxies.
    help("parent", "NAME { server HOST:PORT [max_fails=N] [fail_timeout=TIME] [backup] [ssl]; ... credentials_file FILE; ssl_trusted_certificate FILE; }", "-", "a parent proxy that route rules may name: servers tried in order with failover, backups only when every primary is down; credentials_file holds one line user:password; ssl: TLS to that server, verified against ssl_trusted_certificate (else the system CAs)"),
    help("route", "PATTERN ... NAME | direct", "direct", "send matching destinations (HOST, *.HOST, .HOST, CIDR of IP-literal targets, default) through parent NAME or direct; first match wins"),
    // Logging.
    help("access_log", "PATH | stderr [FORMAT] [buffer=SIZE] [flush=TIME] | off", "off", "one line per request, tunnel and refusal"),
    help("log_format", "NAME [escape=default|json|none] 'STRING' ...", "combined, sluice", "a line format made of $variables"),
];

/// The entry for `name`.
pub fn help_for(name: &str) -> Option<&'static Help> {
    HELP.iter().find(|h| h.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::directive::Role;

    #[test]
    fn every_directive_sluice_uses_has_an_entry() {
        let missing: Vec<_> = crate::settings::directives()
            .filter(|spec| matches!(spec.role, Role::Used))
            .filter(|spec| help_for(spec.name).is_none())
            .map(|spec| spec.name)
            .collect();
        assert!(
            missing.is_empty(),
            "directives without a line in src/manual/directives.rs: {missing:?}"
        );
    }

    #[test]
    fn every_entry_is_a_directive_sluice_uses() {
        for help in HELP {
            let spec = crate::settings::directives().find(|s| s.name == help.name);
            assert!(
                spec.is_some_and(|s| matches!(s.role, Role::Used)),
                "{} has a line in the manual but is not a directive sluice uses",
                help.name
            );
        }
    }

    #[test]
    fn entries_are_one_line_each() {
        for help in HELP {
            for text in [help.syntax, help.default, help.meaning] {
                assert!(
                    !text.contains(['\n', '\t']),
                    "{}: the manual's table cells are one line",
                    help.name
                );
            }
        }
    }
}
