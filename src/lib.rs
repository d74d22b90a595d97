//! sluice: a forward proxy for HTTPS egress, configured in nginx syntax.
//!
//! A connection travels through the modules in this order:
//!
//! ```text
//! server ──accept──▶ transport ──▶ connection ──read head──▶ request ──▶ target + policy
//!                                      ▲                                    │
//!                                      │       CONNECT ◀────────────────────┴────────────▶ absolute URI
//!                                      │          │                                           │
//!                                      │   upstream (resolve ▶ dial) ▶ "200" ▶ tunnel    forward ▶ upstream (or pool)
//!                                      └───────────────── keep-alive: next request ◀──────────┘
//! ```
//!
//! - [`server`] binds the listeners of every `server { }` block, accepts connections, and on
//!   `SIGHUP` reloads a new configuration into the listeners without touching open ones.
//! - [`transport`] turns an accepted socket into the client's stream and what is known about
//!   the client: the place for a PROXY-protocol header or a TLS handshake. Everything after it
//!   works on any [`transport::ClientStream`].
//! - [`connection`] drives one client connection from its handshake to its close, and is the
//!   one place that writes a failure's answer; [`error`] decides its status and how it counts.
//! - [`context`] is what the connections of one `server` block share: configuration,
//!   resolver, upstream pool, and the signals that stop them.
//! - [`request`] reads and validates the request head (size limits, timeouts, strict syntax).
//! - [`target`] parses the CONNECT authority (`host:port`, `[v6]:port`).
//! - [`resolve`] turns a host name into addresses (hickory-resolver, `resolver` directive).
//! - [`dial`] connects upstream: several addresses raced as RFC 8305 says, one timeout, an
//!   optional source address.
//! - [`route`] picks the way to a destination (`route` rules: direct, or a parent proxy), and
//!   [`upstream`] is the one path to an origin along it: on a direct route, the destination
//!   rules, [`resolve`], then [`dial`]; on a parent route, [`parent`]'s servers with failover.
//! - [`tunnel`] moves bytes both ways, passing half-closes on, until both directions are done.
//! - [`relay`] is the one byte mover: every read, timed write and tunnel direction, on Linux
//!   through [`splice`] pipes between plain sockets, asking a [`relay::Budget`] (a bandwidth
//!   limit of [`limits::rate`], or none) before each read.
//! - [`http2`] serves HTTP/2 connections (`http2 on`): each stream is one exchange of the
//!   HTTP/1.1 pipeline above, through an in-memory pipe.
//! - [`forward`] forwards plain-HTTP requests: header hygiene, strict framing, streamed bodies,
//!   an idle upstream pool; [`stream`] is the buffered stream it and [`request`] read from.
//! - [`access`] decides who may use the proxy and where it may go (allow/deny, proxy
//!   authentication, destination rules); [`limits`] counts connections.
//! - [`deadline`] computes deadlines that cannot overflow, whatever time a caller passes.
//! - [`config`] is the nginx configuration language: lexer, syntax tree, value parsers, and the
//!   walker that checks each directive against the module that declares it. Each module keeps
//!   its directives and their settings in its own `settings` ([`connect`] for CONNECT);
//!   [`settings`] assembles them into a server's [`settings::Config`]. [`template`] expands
//!   `$variables`.
//! - [`access_log`] writes one line per request off the event loop; [`metrics`] counts, and
//!   [`status`] serves the counts (`/metrics`), `/healthz` and the live view of open connections
//!   ([`live`]: `/status`, `/status.json`) on `status_listen`.
//! - [`manual`] is the man page sluice(8), its directive table built from the same specs.

pub mod access;
pub mod access_log;
pub mod config;
pub mod connect;
pub mod connection;
pub mod context;
pub mod deadline;
pub mod dial;
pub mod error;
pub mod forward;
pub mod http2;
pub mod limits;
pub mod live;
pub mod manual;
pub mod metrics;
pub mod parent;
pub mod relay;
pub mod request;
pub mod resolve;
pub mod rewrite;
pub mod route;
pub mod server;
pub mod settings;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod status;
pub mod stream;
pub mod target;
pub mod template;
pub mod transport;
pub mod tunnel;
pub mod upstream;
pub mod variables;
pub mod workers;

/// `sluice/<version>`, as sent in `Proxy-agent`.
pub const AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));
