//! Forwarding plain-HTTP requests in absolute-form (`GET http://host/path`) to the origin they
//! name, as `proxy_pass http://$http_host$request_uri;` does in nginx, but with the URI — never
//! a Host header — deciding where the request goes.
//!
//! One request at a time: check the target, the framing and the policy; pick the route; take
//! an idle upstream connection kept for that route and destination, or open one (the same
//! [`upstream::connect`] as CONNECT); send sluice's own head;
//! then stream the body up while relaying the response down, so `Expect: 100-continue` and
//! early answers work; finally say whether the client connection may carry another request.

mod body;
mod chunked;
mod framing;
mod headers;
mod pool;
pub mod settings;
mod uri;

pub use chunked::{Chunk, ChunkError, ChunkedDecoder};
pub use framing::refuse_connect_body;
pub use pool::{Pool, PoolKey};
pub use uri::AbsoluteUri;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use self::body::{BodyError, Encoding, Pipe};
use self::framing::Framing;
use self::headers::{ClientFraming, RequestInfo, ResponseHead};
use crate::access;
use crate::access::Verdict;
use crate::access::users::Rules;
use crate::access_log::Entry;
use crate::context::ServerContext;
use crate::dial::DialOptions;
use crate::error::ProxyError;
use crate::limits::rate::{Throttle, Way};
use crate::relay::{Unlimited, write_all};
use crate::request::Head;
use crate::route::{self, Route};
use crate::stream::{Conn, HeadError, ReadBuf};
use crate::transport::{ClientStream, ReadSide, WriteSide, reset};
use crate::upstream::{self, Purpose, Timings, Upstream, UpstreamStream};
use settings::Forwarding;

/// The largest response head accepted from an origin.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Pooled connections tried before opening a fresh one.
const POOLED_ATTEMPTS: usize = 3;

/// What the client connection does after a forwarded request.
#[derive(Debug)]
pub enum Next {
    /// Read the next request.
    KeepAlive,
    /// The response is complete; close.
    Close,
    /// The response could not be completed: close at once, with a reset, so the client cannot
    /// mistake what it got for a whole response.
    Abort,
    /// The origin agreed to switch protocols: tunnel from here on. `early_down` are bytes the
    /// origin sent right after its `101`.
    Upgrade {
        upstream: UpstreamStream,
        early_down: Vec<u8>,
    },
}

/// Forwards one request, or refuses one this server does not forward. `Err` means nothing was
/// sent to the client yet and it gets that error as its answer. Either way `entry` gets what
/// happened for the access log: the location that served it, the status and bytes sent to the
/// client, the upstream and how long reaching it took.
pub async fn forward<S: ClientStream>(
    client: &mut Conn<S>,
    head: &Head,
    peer: SocketAddr,
    ctx: &ServerContext,
    entry: &mut Entry<'_>,
) -> Result<Next, ProxyError> {
    let config = &ctx.config;
    if !ctx.forwards() {
        return Err(not_forwarded(head));
    }
    let uri = AbsoluteUri::parse(&head.target)?;
    let path = uri.path_and_query.split('?').next().unwrap_or("/");
    let location = config
        .location_for(path)
        .filter(|l| l.proxy_pass)
        .ok_or_else(|| not_forwarded(head))?;
    entry.location = config
        .locations
        .iter()
        .position(|l| std::ptr::eq(l, location));
    let framing = framing::request(&head.headers, head.version)?;
    if framing == Framing::Chunked {
        body::precheck_chunked(client.buf.data())
            .map_err(|e| ProxyError::BadRequest(format!("refused: {e}")))?;
    }
    if !config.http_ports.allows(uri.target.port) {
        return Err(ProxyError::ForwardPortNotAllowed(uri.target.port));
    }
    let route = route::pick(ctx, &uri.target);
    entry.route = Some(route.clone());
    let user = entry.user.clone();
    let rules = access::users::rules_for(config, user.as_deref());
    let parent = match &route {
        Route::Parent(parent) => Some(&**parent),
        Route::Direct => None,
    };
    let upgrade = headers::upgrade_protocol(head);
    let forwarding = &location.forwarding;
    let info = RequestInfo {
        head,
        uri: &uri,
        peer,
        entry: Some(&*entry),
    };
    let exchange = Exchange {
        ctx,
        head,
        forwarding,
        framing,
        upgrade: upgrade.as_deref(),
        request: headers::request_head(&info, framing, upgrade.as_deref(), forwarding, parent),
        route,
        destination: uri.target.to_string(),
        peer,
        rules,
    };
    // The origin may close a pooled connection just as it is taken, or after reading the
    // request. Only an idempotent request without body bytes may be sent again (RFC 9110
    // §9.2.2): the origin may have acted on it already, and a body read from the client is gone.
    let replayable = is_idempotent(&head.method) && no_body_bytes(framing);
    let pool_key = exchange.pool_key();
    for _ in 0..POOLED_ATTEMPTS {
        let Some(upstream) = ctx.pool.take(&pool_key) else {
            break;
        };
        entry.upstream = Some(upstream.addr);
        let judged =
            access::users::judge_reused(&rules, &exchange.route, &uri.target, upstream.addr);
        entry.timings.verdict = Some(judged.as_ref().map_or(Verdict::Deny, |v| *v));
        judged?;
        match exchange.run(client, upstream, entry).await {
            Err(Attempt::Stale) if replayable => continue,
            result => return exchange.settle(result),
        }
    }
    let options = DialOptions {
        timeout: forwarding.connect_timeout,
        bind: config.connect.bind,
    };
    entry.timings = Timings::default();
    let connected = upstream::connect(
        ctx,
        &exchange.route,
        Purpose::Forward,
        &uri.target,
        &rules,
        None,
        options,
        &mut entry.timings,
    )
    .await;
    let upstream = connected?;
    entry.upstream = Some(upstream.addr);
    let result = exchange.run(client, upstream, entry).await;
    exchange.settle(result)
}

/// The one answer to a request this server does not forward: `405`, as CONNECT is what it
/// serves; on a server that forwards nothing, an origin-form request (a client that took the
/// proxy for a web server) gets a `400` that says what this server is.
fn not_forwarded(head: &Head) -> ProxyError {
    if head.target.starts_with('/') || head.target == "*" {
        ProxyError::BadRequest(
            "this is a forward proxy: it serves only CONNECT requests (use it as an HTTPS proxy)"
                .into(),
        )
    } else {
        ProxyError::MethodNotAllowed("CONNECT")
    }
}

/// How one attempt on one upstream connection failed.
enum Attempt {
    /// The connection was closed before any byte of an answer came back.
    Stale,
    /// Answer the client with this.
    Failed(ProxyError),
}

/// How relaying the response ended.
enum Relayed {
    Done {
        close_client: bool,
        reusable: bool,
    },
    Upgraded,
    Aborted,
    /// The client closed its connection, or it failed, before the answer was complete.
    ClientGone,
}

/// How the client's side of an exchange went: its request body up, then a watch for its
/// leaving while the answer comes. Waiting on an origin for a client that is gone would hold
/// the origin's connection and the client's place until the origin answers or times out;
/// nginx ends the request there too (`proxy_ignore_client_abort off`, the default).
enum Upload {
    /// The body went up whole, and the client then sent more (its next request), or no one
    /// watches for its leaving (`proxy_ignore_client_abort on`).
    Sent,
    Failed(BodyError),
    ClientGone,
}

/// The status logged for a request whose client left before any answer, as nginx logs it.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Bytes read at most by the watch for a client's leaving; more wait in the socket.
const WATCH_READ: usize = 4096;

/// One request, ready to be sent on an upstream connection.
struct Exchange<'a> {
    ctx: &'a ServerContext,
    head: &'a Head,
    forwarding: &'a Forwarding,
    framing: Framing,
    upgrade: Option<&'a str>,
    /// The head sent to the origin.
    request: Vec<u8>,
    /// The way to the origin, picked once for the request.
    route: Route,
    /// `host:port`, as the request named it.
    destination: String,
    peer: SocketAddr,
    /// The rules of the request's user (bandwidth limits for the response).
    rules: Rules<'a>,
}

impl Exchange<'_> {
    /// Where idle connections that can carry this request are kept: a direct connection
    /// serves one destination, a connection to a parent proxy any destination routed to it.
    fn pool_key(&self) -> PoolKey {
        let destination = match self.route {
            Route::Direct => self.destination.clone(),
            Route::Parent(_) => String::new(),
        };
        PoolKey {
            route: self.route.clone(),
            destination,
        }
    }

    /// The client's answer when the last attempt failed.
    fn settle(&self, result: Result<Next, Attempt>) -> Result<Next, ProxyError> {
        result.map_err(|attempt| match attempt {
            Attempt::Stale => ProxyError::BadGateway(format!(
                "{} closed the connection without answering",
                self.destination
            )),
            Attempt::Failed(error) => error,
        })
    }

    /// Sends the request on `upstream` and relays the answer, counting what the client was
    /// sent in `entry`.
    async fn run<S: ClientStream>(
        &self,
        client: &mut Conn<S>,
        upstream: Upstream,
        entry: &mut Entry<'_>,
    ) -> Result<Next, Attempt> {
        let Upstream {
            stream,
            addr,
            route,
            // Only a tunnel's parent sends bytes ahead of use.
            early: _,
        } = upstream;
        let mut upstream = Conn::for_answer(stream);
        if write_all(
            &mut upstream.stream,
            &self.request,
            self.forwarding.send_timeout,
        )
        .await
        .is_err()
        {
            return Err(Attempt::Stale);
        }
        // A body of no bytes (`Content-Length: 0`) is done once the head is sent: the origin
        // may answer before `upload` is first polled, and the relay must not take the request
        // for unfinished then (it would close a keep-alive client connection).
        let body_done = AtomicBool::new(no_body_bytes(self.framing));
        let answered = AtomicBool::new(false);
        let relayed = {
            // Each future reads one stream and writes the other: the body goes up from the
            // client's read side while the answer comes down into its write side. Once the
            // body is up, the read side is watched for the client's leaving.
            let Conn {
                stream: client_stream,
                buf: client_buf,
            } = client;
            let Conn {
                stream: up_stream,
                buf: up_buf,
            } = &mut upstream;
            let (mut client_in, mut client_out) = client_stream.split();
            let (mut up_in, mut up_out) = up_stream.split();
            let upload = async {
                let mut pipe = Pipe {
                    from: &mut client_in,
                    budget: Unlimited,
                    buf: client_buf,
                    to: &mut up_out,
                    read_timeout: self.ctx.config.client.body_timeout,
                    write_timeout: self.forwarding.send_timeout,
                    head: Vec::new(),
                    head_written: 0,
                    written: 0,
                };
                let encoding = match self.framing {
                    Framing::Chunked => Encoding::Chunked,
                    _ => Encoding::Identity,
                };
                if let Err(error) = pipe.copy(self.framing, encoding).await {
                    return Upload::Failed(error);
                }
                body_done.store(true, Ordering::Relaxed);
                if self.forwarding.ignore_client_abort {
                    return Upload::Sent;
                }
                // Bytes sent meanwhile (a pipelined request) stay buffered for the next
                // exchange, and end the watch.
                match pipe.buf.watch(pipe.from, WATCH_READ).await {
                    Ok(0) | Err(_) => Upload::ClientGone,
                    Ok(_) => Upload::Sent,
                }
            };
            let relay = self.relay(
                &mut up_in,
                up_buf,
                &mut client_out,
                &body_done,
                &answered,
                entry,
            );
            tokio::pin!(upload, relay);
            let mut uploading = true;
            loop {
                // `upload` first: whatever it can finish without waiting is recorded in
                // `body_done` before the relay reads it.
                tokio::select! {
                    biased;
                    uploaded = &mut upload, if uploading => {
                        uploading = false;
                        match uploaded {
                            // The origin stopped reading; its answer (a 413, say) may still come.
                            Upload::Sent | Upload::Failed(BodyError::Write) => {}
                            Upload::Failed(error) => break self.body_failed(error, answered.load(Ordering::Relaxed)),
                            Upload::ClientGone => break Ok(Relayed::ClientGone),
                        }
                    }
                    relayed = &mut relay => break relayed,
                }
            }
        };
        match relayed {
            Err(attempt) => {
                reset(upstream.stream.socket());
                Err(attempt)
            }
            Ok(Relayed::Aborted) => {
                reset(upstream.stream.socket());
                Ok(Next::Abort)
            }
            Ok(Relayed::ClientGone) => {
                reset(upstream.stream.socket());
                log::debug!(
                    "{}: the client left before its answer from {} was complete",
                    self.peer,
                    self.destination
                );
                if !answered.load(Ordering::Relaxed) {
                    entry.status = CLIENT_CLOSED_REQUEST;
                }
                Ok(Next::Abort)
            }
            Ok(Relayed::Upgraded) => Ok(Next::Upgrade {
                early_down: upstream.buf.take(),
                upstream: upstream.stream,
            }),
            Ok(Relayed::Done {
                close_client,
                reusable,
            }) => {
                let body_finished = body_done.load(Ordering::Relaxed);
                if reusable && body_finished {
                    let idle = Upstream {
                        stream: upstream.stream,
                        addr,
                        route,
                        early: Vec::new(),
                    };
                    self.ctx.pool.put(&self.pool_key(), idle);
                }
                Ok(if close_client || !body_finished {
                    Next::Close
                } else {
                    Next::KeepAlive
                })
            }
        }
    }

    /// Writes a response head to the client, counting it.
    async fn send_head<W: WriteSide>(
        &self,
        client: &mut W,
        head: &[u8],
        entry: &mut Entry<'_>,
    ) -> std::io::Result<()> {
        write_all(client, head, self.ctx.config.client.send_timeout).await?;
        entry.sent(head.len() as u64, 0);
        Ok(())
    }

    /// The request body could not be read from the client. The origin never got a complete
    /// request (its connection is reset); the client gets an answer if it has none yet.
    fn body_failed(&self, error: BodyError, answered: bool) -> Result<Relayed, Attempt> {
        let answer = match error {
            BodyError::Malformed(e) => {
                ProxyError::BadRequest(format!("refused: malformed chunked body: {e}"))
            }
            BodyError::ReadTimeout => ProxyError::BodyTimeout,
            BodyError::Truncated | BodyError::Write => return Ok(Relayed::Aborted),
        };
        if answered {
            Ok(Relayed::Aborted)
        } else {
            Err(Attempt::Failed(answer))
        }
    }

    /// Reads the origin's answer and relays it: interim `1xx` heads, then the final head and
    /// its body, re-framed for the client.
    async fn relay<R: ReadSide, W: WriteSide>(
        &self,
        upstream: &mut R,
        up_buf: &mut ReadBuf,
        client: &mut W,
        body_done: &AtomicBool,
        answered: &AtomicBool,
        entry: &mut Entry<'_>,
    ) -> Result<Relayed, Attempt> {
        let read_timeout = self.forwarding.read_timeout;
        let send_timeout = self.ctx.config.client.send_timeout;
        let gateway = |error: ProxyError| {
            if answered.load(Ordering::Relaxed) {
                Ok(Relayed::Aborted)
            } else {
                Err(Attempt::Failed(error))
            }
        };
        let response = loop {
            let end = match up_buf
                .read_head(upstream, MAX_RESPONSE_HEAD, read_timeout, read_timeout)
                .await
            {
                Ok(end) => end,
                Err(HeadError::Silent) if !answered.load(Ordering::Relaxed) => {
                    return Err(Attempt::Stale);
                }
                Err(HeadError::Idle | HeadError::TimedOut) => {
                    return gateway(ProxyError::GatewayTimeout(format!(
                        "{} did not answer within {:?} (proxy_read_timeout)",
                        self.destination, read_timeout
                    )));
                }
                Err(error) => {
                    return gateway(ProxyError::BadGateway(format!(
                        "{} sent no usable response head ({error:?})",
                        self.destination
                    )));
                }
            };
            let response = match ResponseHead::parse(&up_buf.data()[..end]) {
                Ok(response) => response,
                Err(why) => {
                    return gateway(ProxyError::BadGateway(format!(
                        "{}: {why}",
                        self.destination
                    )));
                }
            };
            up_buf.consume(end);
            match response.status {
                101 => {
                    let Some(protocol) = self.upgrade else {
                        return gateway(ProxyError::BadGateway(format!(
                            "{} switched protocols without being asked",
                            self.destination
                        )));
                    };
                    let head = headers::response_head(
                        &response,
                        ClientFraming::NoBody,
                        false,
                        Some(protocol),
                        self.forwarding.via,
                    );
                    answered.store(true, Ordering::Relaxed);
                    entry.status = 101;
                    return Ok(match self.send_head(&mut *client, &head, entry).await {
                        Ok(()) => Relayed::Upgraded,
                        Err(_) => Relayed::Aborted,
                    });
                }
                100..=199 => {
                    // Interim answers (100 Continue, 103 Early Hints) mean nothing to HTTP/1.0.
                    if self.head.version == 1 {
                        let head = headers::response_head(
                            &response,
                            ClientFraming::NoBody,
                            false,
                            None,
                            self.forwarding.via,
                        );
                        answered.store(true, Ordering::Relaxed);
                        if self.send_head(&mut *client, &head, entry).await.is_err() {
                            return Ok(Relayed::Aborted);
                        }
                    }
                }
                _ => break response,
            }
        };
        // A parent that refuses sluice's credentials: the client cannot fix that.
        if let (407, Route::Parent(parent)) = (response.status, &self.route) {
            return gateway(ProxyError::ParentRefused {
                parent: parent.name.clone(),
                status: 407,
            });
        }
        let framing = match framing::response(
            &response.headers,
            response.status,
            self.head.method == "HEAD",
        ) {
            Ok(framing) => framing,
            Err(why) => {
                return gateway(ProxyError::BadGateway(format!(
                    "{}: {why}",
                    self.destination
                )));
            }
        };
        let (client_framing, encoding) = match framing {
            Framing::Empty => (ClientFraming::NoBody, Encoding::Identity),
            Framing::Length(n) => (ClientFraming::Length(n), Encoding::Identity),
            Framing::Chunked | Framing::UntilClose if self.head.version == 1 => {
                (ClientFraming::Chunked, Encoding::Chunked)
            }
            Framing::Chunked | Framing::UntilClose => (ClientFraming::Close, Encoding::Identity),
        };
        let client_keeps = client_wants_keep_alive(self.head) && body_done.load(Ordering::Relaxed);
        let close_client = !client_keeps || client_framing == ClientFraming::Close;
        let head = headers::response_head(
            &response,
            client_framing,
            close_client,
            None,
            self.forwarding.via,
        );
        answered.store(true, Ordering::Relaxed);
        entry.status = response.status;
        let budget = Throttle::new(self.rules.rates, Way::Down, self.peer.ip(), self.rules.user);
        let mut pipe = Pipe {
            from: upstream,
            budget,
            buf: up_buf,
            to: client,
            read_timeout,
            write_timeout: send_timeout,
            head,
            head_written: 0,
            written: 0,
        };
        let moved = pipe.copy(framing, encoding).await;
        entry.sent(pipe.head_written, pipe.written);
        log::debug!(
            "{} \"{} {}\" {}: {}",
            self.peer,
            self.head.method,
            self.head.target,
            response.status,
            match &moved {
                Ok(bytes) => format!("{bytes} body bytes"),
                Err(error) => format!("response cut short: {error:?}"),
            }
        );
        if moved.is_err() {
            return Ok(Relayed::Aborted);
        }
        let reusable = !response.closes()
            && matches!(
                framing,
                Framing::Empty | Framing::Length(_) | Framing::Chunked
            )
            && up_buf.is_empty();
        Ok(Relayed::Done {
            close_client,
            reusable,
        })
    }
}

/// The methods RFC 9110 §9.2.2 defines as idempotent: the only ones sent twice.
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// A request that sends no body bytes after its head: none at all, or `Content-Length: 0`.
fn no_body_bytes(framing: Framing) -> bool {
    matches!(framing, Framing::Empty | Framing::Length(0))
}

/// HTTP/1.1 keeps the connection unless the client says `close`; HTTP/1.0 closes it.
fn client_wants_keep_alive(head: &Head) -> bool {
    head.version == 1
        && !framing::list(&head.headers, "connection")
            .iter()
            .any(|t| t == "close")
}
