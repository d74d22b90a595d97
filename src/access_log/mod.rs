//! The access log: one line per request, per tunnel (when it ends) and per refusal, in an
//! nginx `log_format`, written to files or standard error.
//!
//! The connection renders its line (cheap, no I/O) and hands it to one writer thread through
//! a bounded queue, so a slow disk never stalls the event loop: when the queue is full the
//! line is dropped and counted. The writer keeps files by path and outlives any one
//! configuration, so a reload only builds new [`AccessLog`] handles.

pub(crate) mod format;
pub mod settings;
mod writer;

pub use format::{Escape, LogFormat};
pub use writer::{reopen, shutdown};

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::config::Origin;
use crate::request::Head;
use crate::route::Route;
use crate::target::Target;
use crate::transport::tls::TlsFacts;
use crate::upstream::Timings;
use crate::variables::Vars;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// `access_log stderr;`, for containers.
    Stderr,
    File(PathBuf),
}

/// One `access_log` directive: a destination and a format.
#[derive(Debug, Clone)]
pub struct Sink {
    pub destination: Arc<Destination>,
    pub format: Arc<LogFormat>,
    /// The directive, named when its file cannot be opened.
    pub origin: Origin,
}

/// The access logs of one level (server or location); empty is `access_log off`.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    sinks: Vec<Sink>,
}

impl AccessLog {
    pub fn new(sinks: Vec<Sink>) -> AccessLog {
        AccessLog { sinks }
    }

    pub fn is_off(&self) -> bool {
        self.sinks.is_empty()
    }

    pub fn sinks(&self) -> &[Sink] {
        &self.sinks
    }

    /// Renders `entry` in every format of this level and queues the lines. Never blocks.
    pub fn write(&self, entry: &Entry) {
        if self.sinks.is_empty() {
            return;
        }
        let now = SystemTime::now();
        for sink in &self.sinks {
            let mut line = Vec::with_capacity(256);
            sink.format.render(entry, now, &mut line);
            line.push(b'\n');
            writer::send(&sink.destination, line);
        }
    }
}

/// What stays the same for every request of one client connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client (`$remote_addr`): the source a PROXY header named, else the TCP peer.
    pub peer: SocketAddr,
    /// The TCP peer (`$realip_remote_addr`): the balancer behind a PROXY header.
    pub tcp_peer: SocketAddr,
    /// The source a PROXY header named (`$proxy_protocol_addr`, `$proxy_protocol_port`).
    pub proxy_protocol: Option<SocketAddr>,
    /// The proxy's address the client connected to (`$server_addr`, `$server_port`).
    pub local: Option<SocketAddr>,
    /// What the TLS handshake told (`$ssl_*`), on an `ssl` listener.
    pub tls: Option<Arc<TlsFacts>>,
    /// `$connection`: the connection's serial number.
    pub id: u64,
}

/// One request as the log sees it, filled in as the request goes.
#[derive(Debug)]
pub struct Entry<'a> {
    pub client: Cow<'a, Client>,
    /// `$connection_requests`: this request's number on its connection, from 1.
    pub requests: u64,
    /// `None` when the head could not be read (a 400, 408, 414 or 431).
    pub head: Option<Cow<'a, Head>>,
    /// `$remote_user`: the authenticated proxy user, or the one a client certificate names.
    pub user: Option<String>,
    pub started: Instant,
    pub status: u16,
    /// Bytes written to the client: heads and bodies (a tunnel's `200` and all it carried).
    pub bytes_sent: u64,
    /// `bytes_sent` without the response head.
    pub body_bytes_sent: u64,
    /// Bytes read from the client: the request head and body (a tunnel's all).
    pub bytes_received: u64,
    /// The CONNECT target.
    pub connect: Option<Target>,
    /// The upstream connected to.
    pub upstream: Option<SocketAddr>,
    /// `$upstream_proxy`: the route picked for the request.
    pub route: Option<Route>,
    pub timings: Timings,
    /// The location that served a forwarded request (its index in the server's `locations`):
    /// its access log is the one written.
    pub location: Option<usize>,
    /// The request's `set` and `map` variables and regex captures.
    pub vars: Vars,
}

impl<'a> Entry<'a> {
    /// A request whose head (if any) has just been read.
    pub fn new(client: &'a Client, requests: u64, head: Option<&'a Head>) -> Entry<'a> {
        Entry {
            client: Cow::Borrowed(client),
            requests,
            head: head.map(Cow::Borrowed),
            user: None,
            started: Instant::now(),
            status: 0,
            bytes_sent: 0,
            body_bytes_sent: 0,
            bytes_received: 0,
            connect: None,
            upstream: None,
            route: None,
            timings: Timings::default(),
            location: None,
            vars: Vars::default(),
        }
    }

    /// Counts bytes written to the client: `head` bytes of response heads and `body` bytes of
    /// body (all that a tunnel carried down counts as body).
    pub fn sent(&mut self, head: u64, body: u64) {
        self.bytes_sent += head + body;
        self.body_bytes_sent += body;
    }

    /// The same entry owning what it borrowed, for a tunnel that outlives its connection's
    /// task. The head is copied only if `keep_head`: a line will be written that may need it.
    pub fn detach(self, keep_head: bool) -> Entry<'static> {
        Entry {
            client: Cow::Owned(self.client.into_owned()),
            head: self
                .head
                .filter(|_| keep_head)
                .map(|head| Cow::Owned(head.into_owned())),
            requests: self.requests,
            user: self.user,
            started: self.started,
            status: self.status,
            bytes_sent: self.bytes_sent,
            body_bytes_sent: self.body_bytes_sent,
            bytes_received: self.bytes_received,
            connect: self.connect,
            upstream: self.upstream,
            route: self.route,
            timings: self.timings,
            location: self.location,
            vars: self.vars,
        }
    }
}

/// Opens (creating them if need be) every log file of `levels`, so that a path that cannot
/// be written is an error at startup, as in nginx:
/// `open() "/var/log/sluice/access.log" failed (Permission denied), access_log in proxy.conf:7`.
pub fn open_files<'a>(levels: impl IntoIterator<Item = &'a AccessLog>) -> Result<(), String> {
    for sink in levels.into_iter().flat_map(AccessLog::sinks) {
        if let Destination::File(path) = &*sink.destination {
            open(path).map_err(|e| {
                format!(
                    "open() \"{}\" failed ({}), access_log in {}",
                    path.display(),
                    describe(&e),
                    sink.origin
                )
            })?;
        }
    }
    Ok(())
}

/// Opens a log file to append to, creating it `0644` (less the umask) if it does not exist.
fn open(path: &std::path::Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
}

/// An I/O error without its `(os error N)` suffix.
fn describe(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Reopens every log file on each `SIGUSR1`, as nginx does: logrotate moves the file, then
/// signals, and the next line lands in a new file at the old path. The handler is installed
/// before this returns (SIGUSR1 would otherwise end the process); must run in a tokio runtime.
pub fn reopen_on_sigusr1() -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            log::info!("SIGUSR1 received: reopening the access log files");
            reopen();
        }
    });
    Ok(())
}
