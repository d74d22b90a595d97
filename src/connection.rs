//! One client connection, from its first byte to its close.
//!
//! The transport's handshake turns the accepted socket into the client's stream. Then: read a
//! head; admit the client. A CONNECT this server may serve reaches its upstream along its
//! route, is answered `200`, and the connection becomes a tunnel. Any other request goes to
//! [`forward`], which forwards it or refuses it, and the connection reads its next request if
//! both sides allow it. Any failure before the client got an answer becomes one error response,
//! written here and nowhere else, followed by a close.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::{self, users::Rules};
use crate::access_log::{AccessLog, Client, Entry};
use crate::config::values::PortList;
use crate::context::ServerContext;
use crate::dial::DialOptions;
use crate::error::ProxyError;
use crate::forward::{self, Next};
use crate::limits::rate::{Throttle, Way};
use crate::limits::{Permit, Places};
use crate::live::{self, State};
use crate::metrics::{self, Mode, Open};
use crate::request::{Head, ReadError, read_head};
use crate::rewrite;
use crate::route;
use crate::settings::Server;
use crate::stream::Conn;
use crate::target::Target;
use crate::transport::{self, ClientInfo, ClientStream};
use crate::tunnel::{self, Early, Outcome};
use crate::upstream::{self, Purpose, UpstreamStream};

/// `$connection`: connections accepted so far.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Serves one accepted connection to its end: the transport's handshake, then its requests.
pub async fn serve(socket: TcpStream, peer: SocketAddr, ctx: Arc<ServerContext>, places: Places) {
    // Only a log line can use the local address (`$server_addr`): no system call otherwise.
    let Some(done) = transport::handshake(socket, peer, ctx.logs(), None).await else {
        return;
    };
    if ctx.config.http2.enabled {
        return crate::http2::serve(done.stream, done.info, done.early, ctx, places).await;
    }
    converse(done.stream, done.info, done.early, ctx, places).await;
}

/// Serves a connection of a `proxy_protocol` listener, or of an `ssl` one (`tls`), or both.
/// The client is known only once the balancer's header is read, and an answer can be written
/// only once TLS is set up, so its `max_connections_per_client` place is taken then; a client
/// over it gets the same `503` as on a plain listener.
pub async fn serve_proxied(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerContext>,
    process: Permit,
    proxied: bool,
    tls: bool,
) {
    // Open from now on: until the handshake, then in the connection's places.
    let open = metrics::get().connection();
    let real_ip = proxied.then_some(&ctx.config.real_ip);
    let Some(done) = transport::handshake(socket, peer, ctx.logs(), real_ip).await else {
        return;
    };
    if !tls {
        return placed(done.stream, done.info, done.early, ctx, process, open).await;
    }
    let Some(acceptor) = &ctx.config.tls.acceptor else {
        return; // a reload turned `ssl` on before this context had its certificate
    };
    let timeout = ctx.config.tls.handshake_timeout;
    if let Some((stream, info)) = transport::tls::accept(acceptor, done, timeout).await {
        placed(stream, info, Vec::new(), ctx, process, open).await;
    }
}

/// Takes the client's `max_connections_per_client` place, then serves its requests.
async fn placed<S: ClientStream>(
    stream: S,
    info: ClientInfo,
    early: Vec<u8>,
    ctx: Arc<ServerContext>,
    process: Permit,
    open: Open,
) {
    let Some(client) = ctx.per_client.try_acquire(info.peer.ip()) else {
        let error = ProxyError::Overloaded("max_connections_per_client");
        log::debug!("{}: 503: {error}", info.peer);
        return refuse(stream, error).await;
    };
    let places = Places::new(process, client, open);
    if ctx.config.http2.enabled {
        return crate::http2::serve(stream, info, early, ctx, places).await;
    }
    converse(stream, info, early, ctx, places).await;
}

/// Reads request after request from `stream` until one ends the connection: an error answer,
/// a close, or a tunnel that takes the stream over. An HTTP/2 stream comes here too, as one
/// HTTP/1.1 exchange over an in-memory pipe ([`crate::http2`]).
pub(crate) async fn converse<S: ClientStream>(
    stream: S,
    info: ClientInfo,
    early: Vec<u8>,
    mut ctx: Arc<ServerContext>,
    places: Places,
) {
    let peer = info.peer;
    let who = Client {
        peer,
        tcp_peer: info.tcp_peer,
        proxy_protocol: info.proxy_protocol,
        local: info.local,
        tls: info.tls.clone(),
        id: CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1,
        http2: info.http2,
    };
    let live = live::Registered::new(who.id, peer);
    let mut client = Conn::with_bytes(stream, early);
    let mut idle = ctx.config.client.header_timeout;
    let mut requests = 0;
    loop {
        ctx = ctx.latest();
        live.set_state(State::ReadingHead);
        let consumed = client.buf.consumed();
        // A stopping proxy lets requests and tunnels finish, but waits for no new request.
        let read = tokio::select! {
            read = read_head(&mut client, ctx.limits, idle, ctx.config.client.header_timeout) => read,
            () = ctx.stopping() => return,
        };
        // A reload while the connection waited: the request is judged by the new context.
        ctx = ctx.latest();
        let config = &ctx.config;
        requests += 1;
        let mut head = match read {
            Ok(head) => head,
            Err(ReadError::Closed) => return,
            Err(ReadError::Refused(error)) => {
                log::debug!("{peer}: {error}");
                let mut entry = Entry::new(&who, requests, None);
                entry.bytes_received = client.buf.len() as u64;
                return refuse_logged(client.stream, entry, &config.access_log, error).await;
            }
        };
        if !config.client.underscores_in_headers {
            drop_underscored(&mut head, peer);
        }
        let mut entry = Entry::new(&who, requests, Some(&head));
        entry.bytes_received = client.buf.consumed() - consumed;
        // nginx's rewrite phases (`set`, `if`, `return`) come before its access phase.
        if let Err(answer) = rewrite::run(config, &mut entry) {
            let log = ctx.access_log(entry.location);
            return refuse_logged(client.stream, entry, log, answer).await;
        }
        match admit(&head, peer, &ctx).await {
            // Basic authentication names the user; else a client certificate does.
            Ok(user) => {
                let user = user.or_else(|| certificate_user(&info));
                live.update(|d| {
                    d.requests = requests;
                    d.user.clone_from(&user);
                });
                entry.user = user;
            }
            Err(error) => {
                return refuse_logged(client.stream, entry, &config.access_log, error).await;
            }
        }
        if head.method == "CONNECT" {
            return connect(client, &head, entry, &ctx, places, live).await;
        }
        live.set_state(State::Forwarding);
        live.update(|d| d.forwarding(&head));
        let result = forward::forward(&mut client, &head, peer, &ctx, &mut entry).await;
        let log = ctx.access_log(entry.location);
        entry.bytes_received = client.buf.consumed() - consumed;
        live.bytes.add(entry.bytes_received, entry.bytes_sent);
        live.update(|d| {
            d.upstream = entry.upstream;
            d.routed(entry.route.as_ref());
        });
        match result {
            Ok(Next::KeepAlive) => {
                finish(&entry, log, Some(Mode::Forward));
                idle = config.client.keepalive_timeout;
            }
            Ok(Next::Close) => {
                finish(&entry, log, Some(Mode::Forward));
                live.set_state(State::Draining);
                return linger_close(client.stream).await;
            }
            Ok(Next::Abort) => {
                finish(&entry, log, Some(Mode::Forward));
                return client.stream.abort();
            }
            Ok(Next::Upgrade {
                upstream,
                early_down,
            }) => {
                let early = Early {
                    up: client.buf.take(),
                    down: early_down,
                };
                let tunnel = Tunnel {
                    client: client.stream,
                    upstream,
                    early,
                    budgets: throttles(
                        &access::users::rules_for(config, entry.user.as_deref()),
                        &entry,
                    ),
                    idle: config.connect.data_timeout,
                    live,
                };
                return hand_over(tunnel, entry, &ctx, places);
            }
            Err(error) => return refuse_logged(client.stream, entry, log, error).await,
        }
    }
}

/// The user a verified client certificate names, if the client sent one.
fn certificate_user(info: &ClientInfo) -> Option<String> {
    let facts = info.tls.as_deref()?;
    facts.user_name().map(str::to_string)
}

/// Who may use this server: `allow`/`deny` first, then proxy authentication, as nginx orders
/// its access and auth phases. Nothing is resolved or dialled for a refused client. The
/// result is the authenticated user, if authentication is on.
async fn admit(
    head: &Head,
    peer: SocketAddr,
    ctx: &ServerContext,
) -> Result<Option<String>, ProxyError> {
    if ctx.config.access.clients.check(peer.ip()).is_err() {
        return Err(ProxyError::ClientDenied);
    }
    let Some(auth) = &ctx.auth else {
        return Ok(None);
    };
    let Some(user) = auth
        .check(head.header("proxy-authorization"), peer.ip())
        .await
    else {
        return Err(ProxyError::AuthRequired {
            realm: auth.realm.clone(),
        });
    };
    log::debug!("{peer} authenticated as \"{user}\"");
    Ok(Some(user))
}

/// Serves a CONNECT: policy, route, reach the upstream, `200`, then [`hand_over`] to a tunnel
/// task.
async fn connect<S: ClientStream>(
    mut client: Conn<S>,
    head: &Head,
    mut entry: Entry<'_>,
    ctx: &Arc<ServerContext>,
    places: Places,
    live: live::Registered,
) {
    live.set_state(State::Connecting);
    let config = &ctx.config;
    let log = &config.access_log;
    let user = entry.user.clone();
    let rules = access::users::rules_for(config, user.as_deref());
    let target = match connect_target(head, config, rules.connect_ports) {
        Ok(target) => target,
        Err(error) => return refuse_logged(client.stream, entry, log, error).await,
    };
    entry.connect = Some(target.clone());
    let plan = match config.connect.plan(&target, &entry) {
        Ok(plan) => plan,
        Err(error) => return refuse_logged(client.stream, entry, log, error).await,
    };
    live.update(|d| d.destination = Some(plan.target.to_string()));
    let options = DialOptions {
        timeout: plan.connect_timeout,
        bind: plan.bind,
    };
    let route = route::pick(ctx, &plan.target);
    entry.route = Some(route.clone());
    live.update(|d| d.routed(Some(&route)));
    let dialled = upstream::connect(
        ctx,
        &route,
        Purpose::Tunnel,
        &plan.target,
        &rules,
        plan.address,
        options,
        &mut entry.timings,
    )
    .await;
    let upstream = match dialled {
        Ok(upstream) => upstream,
        Err(error) => return refuse_logged(client.stream, entry, log, error).await,
    };
    entry.upstream = Some(upstream.addr);
    live.update(|d| d.upstream = Some(upstream.addr));
    entry.status = 200;
    let response = match plan.response {
        Some(response) => response,
        None => established_response(config, &entry),
    };
    let sent = tokio::time::timeout(
        plan.data_timeout,
        send(&mut client.stream, response.as_bytes()),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return finish(&entry, log, Some(Mode::Tunnel));
    }
    entry.bytes_sent = response.len() as u64;
    live.bytes.add(entry.bytes_received, entry.bytes_sent);
    live.set_state(State::Tunnel);
    let early = Early {
        up: client.buf.take(),
        down: upstream.early,
    };
    let tunnel = Tunnel {
        client: client.stream,
        upstream: upstream.stream,
        early,
        budgets: throttles(&rules, &entry),
        idle: plan.data_timeout,
        live,
    };
    hand_over(tunnel, entry, ctx, places);
}

/// A connection that became a tunnel (after a CONNECT's `200` or an upgrade's `101`).
struct Tunnel<S> {
    client: S,
    upstream: UpstreamStream,
    early: Early,
    /// The bandwidth limits of each direction.
    budgets: [Throttle; 2],
    /// The longest pause in either direction.
    idle: Duration,
    /// Its entry on the status page, until the tunnel ends.
    live: live::Registered,
}

/// Runs `tunnel` in a task of its own, which holds only what a tunnel needs while the
/// connection's task (sized for the largest thing a connection may do) ends: an idle tunnel
/// costs a few hundred bytes. The tunnel is logged, in the log of the location that served it
/// if one did, and counted when it ends; `places` are given back then.
fn hand_over<S: ClientStream>(
    tunnel: Tunnel<S>,
    entry: Entry<'_>,
    ctx: &Arc<ServerContext>,
    places: Places,
) {
    let logged = !ctx.access_log(entry.location).is_off();
    let mut entry = entry.detach(logged);
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let _tunnel = metrics::get().tunnel();
        let outcome = run_tunnel(tunnel, &ctx).await;
        log::debug!(
            "{} tunnel to {} ended after {:?}: {} bytes up, {} down, {:?}",
            entry.client.peer,
            entry
                .upstream
                .map_or_else(|| "?".to_string(), |a| a.to_string()),
            entry.started.elapsed(),
            outcome.up,
            outcome.down,
            outcome.end,
        );
        carried(&mut entry, &outcome);
        finish(&entry, ctx.access_log(entry.location), Some(Mode::Tunnel));
        drop(places);
    });
}

/// Runs a tunnel to its end, or until the proxy closes every connection (fast shutdown): then
/// both sockets are shut down, so the tunnel ends at once with its byte counts and is logged.
async fn run_tunnel<S: ClientStream>(tunnel: Tunnel<S>, ctx: &ServerContext) -> Outcome {
    // An HTTP/2 stream has no socket of its own: its connection closes it.
    let sockets = [
        tunnel.client.socket().map(AsRawFd::as_raw_fd),
        Some(tunnel.upstream.socket().as_raw_fd()),
    ];
    tunnel.live.set_state(State::Tunnel);
    let run = tunnel::run(
        tunnel.client,
        tunnel.upstream,
        tunnel.early,
        tunnel.idle,
        tunnel.budgets,
        &tunnel.live.bytes,
    );
    tokio::pin!(run);
    tokio::select! {
        outcome = &mut run => return outcome,
        () = ctx.closing() => {}
    }
    for socket in sockets.into_iter().flatten() {
        // SAFETY: `run` owns both sockets until it returns, and it has not returned, so each
        // descriptor is still the tunnel's socket. shutdown(2) changes no memory.
        unsafe {
            libc::shutdown(socket, libc::SHUT_RDWR);
        }
    }
    run.await
}

/// The bandwidth limits of a tunnel's two directions (up, down), under the rules already
/// chosen for the request's user (its `users` block's or the server's).
fn throttles(rules: &Rules, entry: &Entry) -> [Throttle; 2] {
    let (rates, user) = (rules.rates, rules.user);
    [Way::Up, Way::Down].map(|way| Throttle::new(rates, way, entry.client.peer.ip(), user))
}

/// Adds what a tunnel carried to its request's byte counts.
fn carried(entry: &mut Entry, outcome: &Outcome) {
    entry.bytes_received += outcome.up;
    entry.sent(0, outcome.down);
}

/// Counts a finished request and writes its access log line.
fn finish(entry: &Entry, log: &AccessLog, mode: Option<Mode>) {
    metrics::get().request(entry.status, mode, entry.bytes_received, entry.bytes_sent);
    metrics::get().user_request(
        entry.user.as_deref(),
        entry.bytes_received,
        entry.bytes_sent,
    );
    log.write(entry);
}

/// `underscores_in_headers off`, as in nginx: fields named with `_` are ignored, so an origin
/// that reads `_` as `-` cannot be handed a second `Content-Length` or `Transfer-Encoding`.
fn drop_underscored(head: &mut Head, peer: SocketAddr) {
    head.headers.retain(|h| {
        let keep = !h.name.contains('_');
        if !keep {
            log::debug!(
                "{peer}: ignored the field \"{}\" (underscores_in_headers off)",
                h.name
            );
        }
        keep
    });
}

/// Checks a CONNECT against this server's policy (`ports`: the user's) and parses its target.
fn connect_target(head: &Head, config: &Server, ports: &PortList) -> Result<Target, ProxyError> {
    if !config.connect.enabled {
        return Err(ProxyError::ConnectDisabled);
    }
    forward::refuse_connect_body(head)?;
    let target = Target::parse_authority(&head.target)?;
    // nginx's `tunnel_pass` checks no port: its users write the ACL with `map` and `if`.
    let ports_apply = !config.connect.tunnel_pass || config.connect.ports_written;
    if ports_apply && !ports.allows(target.port) {
        return Err(ProxyError::PortNotAllowed(target.port));
    }
    Ok(target)
}

/// The head that tells the client its tunnel is open.
fn established_response(config: &Server, entry: &Entry) -> String {
    match &config.connect.response {
        Some(template) => crate::variables::render(template, entry),
        None => format!(
            "HTTP/1.1 200 Connection Established\r\nProxy-agent: {}\r\n\r\n",
            crate::AGENT
        ),
    }
}

/// How long a refused client may keep sending before the connection is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it is read and thrown away.
const LINGER_BYTES: usize = 64 * 1024;

/// Logs why a request was refused (server-side failures louder), answers it, writes its
/// access log line, and closes.
async fn refuse_logged<S: ClientStream>(
    mut client: S,
    mut entry: Entry<'_>,
    log: &AccessLog,
    error: ProxyError,
) {
    let status = error.class().status;
    let request = entry
        .head
        .as_deref()
        .map_or_else(String::new, |h| format!(" \"{} {}\"", h.method, h.target));
    let peer = entry.client.peer;
    if status >= 500 {
        log::warn!("{peer}{request}: {status}: {error}");
    } else {
        log::debug!("{peer}{request}: {status}: {error}");
    }
    entry.status = status;
    let written = answer(&mut client, &error).await;
    if let Some((head, body)) = written {
        entry.sent(head, body);
    }
    finish(&entry, log, None);
    if written.is_some() {
        linger_close(client).await;
    }
}

/// Writes the error response and closes.
pub async fn refuse<S: ClientStream>(mut client: S, error: ProxyError) {
    if answer(&mut client, &error).await.is_some() {
        linger_close(client).await;
    }
}

/// Writes the error response, counting a refusal by policy or limit. The sizes of its head
/// and body if it was written.
async fn answer<S: ClientStream>(client: &mut S, error: &ProxyError) -> Option<(u64, u64)> {
    if let Some(reason) = error.class().refusal {
        metrics::get().refused(reason);
    }
    let response = error.response();
    let written = tokio::time::timeout(LINGER, send(client, &response)).await;
    if !matches!(written, Ok(Ok(()))) {
        return None;
    }
    let head = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    Some((head as u64, (response.len() - head) as u64))
}

/// Writes all of `bytes` out: a stream that buffers (TLS) is flushed.
async fn send<S: ClientStream>(client: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

/// Closes after a complete answer. Bytes the client already sent are drained for a moment
/// first: closing with unread data makes the kernel send a reset, which can destroy the answer
/// before the client reads it (nginx's "lingering close").
async fn linger_close<S: ClientStream>(mut client: S) {
    let _ = client.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        // On the heap: an array here would make every connection's task 4 KiB larger.
        let mut sink = vec![0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
