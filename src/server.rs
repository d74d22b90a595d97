//! Listening sockets, the accept loop, and reloading a new configuration into them.
//!
//! Every `listen` of every `server` block becomes one socket, watched by every worker (see
//! [`crate::workers`]); each accepted connection runs in its own task, on the worker that
//! accepted it, with the context (policy, resolver) of the block that owns the socket. A
//! reload builds new contexts and hands them to the sockets it keeps; a keep-alive connection
//! of a kept socket judges its next request by the new context, while open tunnels are never
//! touched. Per-client connection counts carry over to the new context.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::access::{Auth, OwnListeners};
use crate::config::Origin;
use crate::connection;
use crate::context::ServerContext;
use crate::error::ProxyError;
use crate::forward::Pool;
use crate::limits::{Gauge, PerClient, Places};
use crate::resolve::Resolver;
use crate::settings::{Config, Listen, Server};
use crate::workers::Spawner;

/// The listen backlog when `listen ... backlog=N` does not say; the kernel caps it at
/// `net.core.somaxconn`.
const DEFAULT_BACKLOG: u32 = 4096;
/// `503` answers to clients over `max_connections_per_client` being written at once; past
/// it such clients are closed at once. Each answer holds a descriptor for a moment (lingering
/// close), so their number is bounded like every other use of descriptors.
const REFUSALS_IN_FLIGHT: usize = 64;

/// The running proxy: every listener accepting, each with its server block's context.
pub struct Proxy {
    listeners: Vec<Listener>,
    /// Client connections open in the whole process, against `max_connections`.
    connections: Arc<Gauge>,
    /// Places for `503` answers being written (see [`REFUSALS_IN_FLIGHT`]).
    refusals: Arc<Semaphore>,
    /// Set once the proxy stops accepting; idle connections watch it.
    stopping: watch::Sender<bool>,
    /// Set when open connections must end now (fast shutdown); tunnels watch it.
    closing: watch::Sender<bool>,
    /// `status_listen`: `/metrics` and `/healthz`.
    status: Option<StatusListener>,
    /// The runtimes that accept and serve connections.
    workers: Spawner,
}

/// The status listener and the task serving it.
struct StatusListener {
    configured: SocketAddr,
    local: SocketAddr,
    serving: JoinHandle<()>,
}

impl Drop for StatusListener {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// One listening socket and its accept loop.
struct Listener {
    /// The address as the `listen` directive wrote it (port 0 included): a reload keeps the
    /// socket of every address it still lists.
    configured: SocketAddr,
    /// The address bound.
    local: SocketAddr,
    /// The `listen` directive's place in the config, for log lines.
    origin: Origin,
    /// `listen ... proxy_protocol`, which a reload may turn on or off on a kept socket.
    proxy_protocol: Arc<AtomicBool>,
    /// `listen ... ssl`, which a reload may turn on or off on a kept socket.
    ssl: Arc<AtomicBool>,
    /// The context new connections get; a reload replaces it.
    context: watch::Sender<Arc<ServerContext>>,
    /// One accept loop per worker, each owning a descriptor of the socket.
    accepting: Vec<JoinHandle<()>>,
}

impl Listener {
    /// Stops accepting and waits until the socket is closed.
    async fn close(&mut self) {
        for task in &mut self.accepting {
            stop(task).await;
        }
    }
}

/// Stops the task that owns a listening socket and waits until it is gone, socket closed.
async fn stop(task: &mut JoinHandle<()>) {
    task.abort();
    let _ = task.await;
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The accept loops own the socket: stopping them closes it.
        for task in &self.accepting {
            task.abort();
        }
    }
}

/// A socket bound for a `listen` directive, not yet accepting.
struct Bound {
    configured: SocketAddr,
    local: SocketAddr,
    /// A descriptor of the socket for each worker.
    sockets: Vec<std::net::TcpListener>,
    origin: Origin,
    proxy_protocol: bool,
    ssl: bool,
    /// The index of the server block it belongs to.
    server: usize,
}

/// What a reload changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Reloaded {
    pub kept: usize,
    pub opened: Vec<SocketAddr>,
    pub closed: Vec<SocketAddr>,
}

impl Proxy {
    /// Binds every listener of `config` and starts accepting on the caller's runtime. Must run
    /// inside a tokio runtime.
    pub async fn start(config: &Config) -> Result<Proxy, String> {
        Proxy::start_on(config, Spawner::current()).await
    }

    /// Binds every listener of `config` and starts accepting on each of `workers`. Errors read
    /// like nginx's: `bind() to 0.0.0.0:80 failed (Permission denied), listen in proxy.conf:3`.
    pub async fn start_on(config: &Config, workers: Spawner) -> Result<Proxy, String> {
        let mut proxy = Proxy {
            listeners: Vec::new(),
            connections: Gauge::new(config.max_connections),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
            stopping: watch::channel(false).0,
            closing: watch::channel(false).0,
            status: None,
            workers,
        };
        proxy.reload(config).await?;
        Ok(proxy)
    }

    /// Serves `config` from now on: sockets for addresses it still lists are kept (nothing
    /// queued on them is lost), new addresses are bound, addresses it no longer lists are
    /// closed. Connections already open are not touched. On any error nothing changes.
    pub async fn reload(&mut self, config: &Config) -> Result<Reloaded, String> {
        crate::access_log::open_files(config.access_logs())?;
        // Sockets first: every server must know all of the proxy's own addresses, which are
        // never a destination.
        let mut kept: Vec<(usize, usize, &Listen)> = Vec::new(); // (listener, server, listen)
        let mut fresh: Vec<Bound> = Vec::new();
        for (server, block) in config.servers.iter().enumerate() {
            for listen in &block.listen {
                let reusable = (0..self.listeners.len()).find(|&index| {
                    self.listeners[index].configured == listen.addr
                        && !kept.iter().any(|&(taken, _, _)| taken == index)
                });
                match reusable {
                    Some(index) => kept.push((index, server, listen)),
                    None => {
                        let failed = |e: io::Error| {
                            format!(
                                "bind() to {} failed ({e}), listen in {}",
                                listen.addr, listen.origin
                            )
                        };
                        let socket = bind_one(listen).map_err(failed)?;
                        let local = socket.local_addr().map_err(failed)?;
                        let workers = self.workers.handles().len();
                        let mut sockets = (1..workers)
                            .map(|_| socket.try_clone())
                            .collect::<io::Result<Vec<_>>>()
                            .map_err(failed)?;
                        sockets.push(socket);
                        fresh.push(Bound {
                            configured: listen.addr,
                            local,
                            sockets,
                            origin: listen.origin.clone(),
                            proxy_protocol: listen.proxy_protocol,
                            ssl: listen.ssl,
                            server,
                        });
                    }
                }
            }
        }
        // The status listener too: kept if its address is unchanged, else bound anew.
        let status_kept = match (&self.status, &config.status_listen) {
            (Some(old), Some(new)) => old.configured == new.addr,
            _ => false,
        };
        let status_fresh = match &config.status_listen {
            Some(status) if !status_kept => Some((status.addr, crate::status::bind(status)?)),
            _ => None,
        };
        let own_addrs = kept
            .iter()
            .map(|&(index, _, _)| self.listeners[index].local)
            .chain(fresh.iter().map(|b| b.local))
            .chain(
                self.status
                    .as_ref()
                    .filter(|_| status_kept)
                    .map(|s| s.local),
            )
            .chain(status_fresh.iter().filter_map(|(_, l)| l.local_addr().ok()));
        let own = Arc::new(OwnListeners::new(own_addrs));
        let contexts = self.contexts(config, &own)?;

        // Nothing can fail from here on.
        self.connections.set_limit(config.max_connections);
        let named = config
            .servers
            .iter()
            .flat_map(|s| &s.users)
            .flat_map(|b| &b.names);
        crate::metrics::get().name_users(named.map(String::as_str));
        for (context, server) in contexts.iter().zip(&config.servers) {
            context
                .per_client
                .set_limit(server.max_connections_per_client);
        }
        let mut listeners = Vec::with_capacity(kept.len() + fresh.len());
        let mut old: Vec<Option<Listener>> = self.listeners.drain(..).map(Some).collect();
        for &(index, server, listen) in &kept {
            // Options of a kept socket (backlog, reuseport) change only with a restart.
            let mut listener = old[index].take().expect("each listener is kept once");
            let replaced = listener.context.send_replace(Arc::clone(&contexts[server]));
            replaced.succeed(&contexts[server]);
            listener.origin = listen.origin.clone();
            listener
                .proxy_protocol
                .store(listen.proxy_protocol, Ordering::Relaxed);
            listener.ssl.store(listen.ssl, Ordering::Relaxed);
            listeners.push(listener);
        }
        let mut closed = Vec::new();
        for mut listener in old.into_iter().flatten() {
            listener.close().await;
            // No kept address of its block carries its connections on: they are told so
            // (an HTTP/2 connection says GOAWAY).
            let context = Arc::clone(&listener.context.borrow());
            if context.successor.get().is_none() {
                context.retired.send_replace(true);
            }
            closed.push(listener.local);
        }
        let mut opened = Vec::new();
        for bound in fresh {
            let (context, current) = watch::channel(Arc::clone(&contexts[bound.server]));
            let proxy_protocol = Arc::new(AtomicBool::new(bound.proxy_protocol));
            let ssl = Arc::new(AtomicBool::new(bound.ssl));
            let accepting = bound
                .sockets
                .into_iter()
                .zip(self.workers.handles())
                .map(|(socket, worker)| {
                    worker.spawn(accept_loop(
                        socket,
                        current.clone(),
                        Arc::clone(&proxy_protocol),
                        Arc::clone(&ssl),
                        Arc::clone(&self.connections),
                        Arc::clone(&self.refusals),
                    ))
                })
                .collect();
            opened.push(bound.local);
            listeners.push(Listener {
                configured: bound.configured,
                local: bound.local,
                origin: bound.origin,
                proxy_protocol,
                ssl,
                context,
                accepting,
            });
        }
        self.listeners = listeners;
        if !status_kept {
            if let Some(mut old) = self.status.take() {
                stop(&mut old.serving).await;
            }
            if let Some((configured, listener)) = status_fresh {
                let local = listener.local_addr().map_err(|e| e.to_string())?;
                self.status = Some(StatusListener {
                    configured,
                    local,
                    serving: tokio::spawn(crate::status::serve(listener)),
                });
            }
        }
        crate::status::publish(config, self.listeners.iter().map(|l| l.local));
        Ok(Reloaded {
            kept: kept.len(),
            opened,
            closed,
        })
    }

    /// One context per server block of `config`. A block keeps the per-client counts of the
    /// block that served its first address still listened on, so that a reload does not
    /// forget who holds how many connections.
    fn contexts(
        &self,
        config: &Config,
        own: &Arc<OwnListeners>,
    ) -> Result<Vec<Arc<ServerContext>>, String> {
        config
            .servers
            .iter()
            .map(|server| {
                let resolver = Resolver::new(server.dns.resolver.as_ref(), server.dns.timeout)
                    .map_err(|e| format!("{e} (server in {})", server.origin))?;
                let auth = match (&server.access.auth_realm, &server.access.auth_users) {
                    (Some(realm), Some(users)) => Some(Auth::new(realm.clone(), users.clone())),
                    _ => None,
                };
                Ok(Arc::new(ServerContext {
                    config: server.clone(),
                    resolver,
                    limits: server.client.limits,
                    pool: Pool::new(self.workers.handles().len()),
                    auth,
                    own_listeners: Arc::clone(own),
                    per_client: self
                        .counts_for(server)
                        .unwrap_or_else(|| PerClient::new(server.max_connections_per_client)),
                    successor: OnceLock::new(),
                    retired: watch::channel(false).0,
                    stopping: self.stopping.subscribe(),
                    closing: self.closing.subscribe(),
                }))
            })
            .collect()
    }

    /// The per-client counts of the running context at one of `server`'s addresses, if any.
    fn counts_for(&self, server: &Server) -> Option<Arc<PerClient>> {
        server.listen.iter().find_map(|listen| {
            self.listeners
                .iter()
                .find(|l| l.configured == listen.addr)
                .map(|l| Arc::clone(&l.context.borrow().per_client))
        })
    }

    /// The status listener's address (`status_listen`), if there is one.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().map(|s| s.local)
    }

    /// Each bound address (a port of 0 resolved to the real one) and the `listen` it came from.
    pub fn listening(&self) -> impl Iterator<Item = (SocketAddr, &Origin)> {
        self.listeners.iter().map(|l| (l.local, &l.origin))
    }

    /// Stops accepting: closes the listeners (new clients are refused by the kernel), tells
    /// idle connections to close, and returns what is needed to wait for the busy ones, or to
    /// close them.
    pub async fn stop(mut self) -> Draining {
        for mut listener in self.listeners.drain(..) {
            listener.close().await;
        }
        if let Some(mut status) = self.status.take() {
            stop(&mut status.serving).await;
        }
        let _ = self.stopping.send(true);
        Draining {
            connections: Arc::clone(&self.connections),
            closing: self.closing.clone(),
        }
    }
}

/// How long [`Draining::close`] waits for closed tunnels to write their access log lines.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// The proxy after it stopped accepting: connections still open finish on their own, or are
/// closed.
pub struct Draining {
    connections: Arc<Gauge>,
    closing: watch::Sender<bool>,
}

impl Draining {
    /// Client connections still open.
    pub fn open(&self) -> usize {
        self.connections.open()
    }

    /// Resolves when the last connection has ended.
    pub async fn finished(&self) {
        while self.connections.open() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes every open tunnel now, and waits briefly (at most `CLOSE_WAIT`) until they
    /// have ended and written their access log lines. Connections still busy after that are
    /// dropped with the runtime.
    pub async fn close(&self) {
        self.closing.send_replace(true);
        let _ = tokio::time::timeout(CLOSE_WAIT, self.finished()).await;
    }
}

fn bind_one(listen: &Listen) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(listen.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if listen.addr.is_ipv6() {
        // As in nginx: [::]:3128 and 0.0.0.0:3128 are separate listeners that may coexist.
        socket.set_only_v6(true)?;
    }
    if listen.reuseport {
        socket.set_reuse_port(true)?;
    }
    // Linux copies it to every accepted socket: one system call per listener, not per client.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&listen.addr.into())?;
    let backlog = listen
        .backlog
        .unwrap_or(DEFAULT_BACKLOG)
        .min(i32::MAX as u32) as i32;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts while `max_connections` leaves a place. At the limit it stops accepting, as nginx
/// and HAProxy do: the client just accepted waits for a place, the next ones wait in the
/// kernel's backlog, costing no descriptor, and all are served in turn as places free up.
/// (Waiting for a place before `accept` would let every idle listener hold one.) A client
/// over `max_connections_per_client` cannot be left waiting (the backlog does not know
/// clients): it gets a fast 503, or, when many such answers are already being written, is
/// closed at once. On a `proxy_protocol` listener the TCP peer is the balancer, so the
/// per-client place is taken by the connection's task once the PROXY header has named the
/// client (see [`connection::serve_proxied`]); on an `ssl` listener too, since an answer must
/// go inside TLS.
async fn accept_loop(
    socket: std::net::TcpListener,
    current: watch::Receiver<Arc<ServerContext>>,
    proxy_protocol: Arc<AtomicBool>,
    ssl: Arc<AtomicBool>,
    connections: Arc<Gauge>,
    refusals: Arc<Semaphore>,
) {
    // Registered here, with the reactor of the worker this loop runs on.
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(error) => {
            log::error!("cannot watch a listening socket: {error}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let context = Arc::clone(&current.borrow());
                let proxied = proxy_protocol.load(Ordering::Relaxed);
                let tls = ssl.load(Ordering::Relaxed);
                if proxied || tls {
                    let process = connections.acquire().await;
                    let serving =
                        connection::serve_proxied(stream, peer, context, process, proxied, tls);
                    tokio::spawn(serving);
                    tokio::task::yield_now().await; // as below
                    continue;
                }
                let Some(client_permit) = context.per_client.try_acquire(peer.ip()) else {
                    let error = ProxyError::Overloaded("max_connections_per_client");
                    match Arc::clone(&refusals).try_acquire_owned() {
                        Ok(slot) => {
                            tokio::spawn(async move {
                                connection::refuse(stream, error).await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            if let Some(reason) = error.class().refusal {
                                crate::metrics::get().refused(reason);
                            }
                            drop(stream);
                        }
                    }
                    continue;
                };
                let open = crate::metrics::get().connection();
                let places = Places::new(connections.acquire().await, client_permit, open);
                tokio::spawn(connection::serve(stream, peer, context, places));
                // Every worker is woken for a new connection: let this one serve what it has
                // before it takes another, so that a burst of clients spreads over them.
                tokio::task::yield_now().await;
            }
            Err(error) => accept_failed(error).await,
        }
    }
}

/// Out of file descriptors or memory: back off instead of spinning, and keep serving the
/// connections already open. A connection that died in the backlog is just skipped.
async fn accept_failed(error: io::Error) {
    if is_per_connection(&error) {
        return;
    }
    log::error!("accept() failed: {error}; pausing this listener for 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Errors that concern one connection that died in the backlog, not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted sockets get no `set_nodelay` of their own on Linux: they must inherit it.
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_sockets_inherit_tcp_nodelay_from_their_listener() {
        let listen = Listen {
            addr: "127.0.0.1:0".parse().unwrap(),
            origin: Origin {
                file: "test".into(),
                line: 1,
            },
            backlog: None,
            reuseport: false,
            proxy_protocol: false,
            http2: false,
            ssl: false,
        };
        let listener = bind_one(&listen).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
