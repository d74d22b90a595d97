//! HTTP/2 from clients: many CONNECT tunnels and forwarded requests on one connection
//! (RFC 9113, CONNECT as §8.5 says).
//!
//! The `h2` crate does the framing, HPACK and flow control; what a stream asks for is served
//! by the HTTP/1.1 pipeline (`exchange`), so HTTP/2 adds a way in and no second policy. This
//! module drives one connection: it tells HTTP/2 from HTTP/1.1 on a plain listener
//! (`preface`), sets the limits `h2` enforces, runs each stream in a task of its own (no more
//! at once than `http2_max_concurrent_streams`, counting streams the client reset but sluice
//! is still winding down), closes an idle connection after `keepalive_timeout`, says GOAWAY
//! when the proxy stops (streams in flight finish), and closes a connection that floods
//! (`flood`).

mod exchange;
mod flood;
mod pipe;
mod preface;
pub mod settings;

use std::future::{pending, poll_fn};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::flood::{Alarm, Answered, Budgets, Flood, Guard};
use self::preface::{Prefixed, Sniffed};
use crate::connection;
use crate::context::ServerContext;
use crate::limits::Places;
use crate::metrics;
use crate::transport::{ClientInfo, ClientStream};

/// The receive window of each stream: what a client may send before sluice has passed it on.
/// Small, because it is what sluice holds for a stream whose upstream does not read.
const STREAM_WINDOW: u32 = 64 * 1024;
/// What `h2` may hold of one stream's answer before the client's connection takes it.
const SEND_BUFFER: usize = 64 * 1024;
/// How long a closing connection may take to write its GOAWAY.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Serves a connection of a server with `http2 on`. Over TLS, ALPN decides: `h2` is HTTP/2,
/// `http/1.1` is HTTP/1.1. Without ALPN (a plain listener, or a TLS client that offered
/// none), HTTP/2 if the client opens with the HTTP/2 preface (prior knowledge), HTTP/1.1
/// otherwise. `early` holds bytes the transport already read.
pub async fn serve<S: ClientStream>(
    mut stream: S,
    info: ClientInfo,
    early: Vec<u8>,
    ctx: Arc<ServerContext>,
    places: Places,
) {
    let alpn = info.tls.as_ref().and_then(|tls| tls.alpn.as_deref());
    match alpn {
        Some(b"h2") => return run(Prefixed::new(early, stream), info, ctx, places).await,
        Some(_) => return connection::converse(stream, info, early, ctx, places).await,
        None => {}
    }
    let idle = ctx.config.client.header_timeout;
    match preface::sniff(&mut stream, early, idle).await {
        Sniffed::Silent => {}
        Sniffed::Http1(seen) => connection::converse(stream, info, seen, ctx, places).await,
        Sniffed::Http2(seen) => run(Prefixed::new(seen, stream), info, ctx, places).await,
    }
}

/// Serves an HTTP/2 connection whose preface is the first thing `io` reads.
async fn run<T>(io: T, info: ClientInfo, ctx: Arc<ServerContext>, places: Places)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    metrics::get().http2_connection();
    let peer = info.peer;
    let max_streams = ctx.config.http2.max_concurrent_streams;
    let alarm = Arc::new(Alarm::default());
    let answered = Arc::new(Answered::default());
    let budgets = Budgets::for_streams(max_streams);
    let io = Guard::new(io, budgets, Arc::clone(&answered), Arc::clone(&alarm));
    // A connection window as large as every stream's, so that streams whose upstream does
    // not read never stall the others.
    let connection_window =
        (u64::from(max_streams) * u64::from(STREAM_WINDOW)).min(i32::MAX as u64);
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(connection_window as u32)
        .max_header_list_size(u32::try_from(ctx.limits.head).unwrap_or(u32::MAX))
        .max_send_buffer_size(SEND_BUFFER)
        .handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(ctx.config.client.header_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            log::debug!("{peer}: HTTP/2 handshake failed: {error}");
            return;
        }
        Err(_) => {
            log::debug!("{peer}: HTTP/2 handshake timed out");
            return;
        }
    };
    log::debug!("{peer}: HTTP/2 connection");
    let mut streams = JoinSet::new();
    let mut idle_since = Instant::now();
    let mut draining = false;
    loop {
        let latest = ctx.latest();
        let keepalive = latest.config.client.keepalive_timeout;
        let quiet = streams.is_empty() && !draining;
        let idle = async {
            if quiet {
                tokio::time::sleep_until(crate::deadline::after(idle_since, keepalive)).await;
            } else {
                pending::<()>().await;
            }
        };
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, mut respond))) => {
                    // Streams the client reset still count until sluice is done with them.
                    if streams.len() >= max_streams as usize {
                        respond.send_reset(Reason::REFUSED_STREAM);
                        continue;
                    }
                    let ctx = ctx.latest();
                    let info = info.clone();
                    let record = answered.stream(respond.stream_id().into());
                    streams.spawn(async move {
                        let _open = metrics::get().http2_stream();
                        exchange::serve(request, respond, record, ctx, info).await;
                    });
                }
                Some(Err(error)) => {
                    // `h2`'s own limits (streams reset before they were accepted, errors
                    // the client keeps provoking) close a flooding connection this way.
                    if error.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
                        log::warn!("{peer}: HTTP/2 connection closed with ENHANCE_YOUR_CALM: {error}");
                        metrics::get().http2_flood();
                    } else {
                        log::debug!("{peer}: HTTP/2 connection failed: {error}");
                    }
                    break;
                }
                None => break,
            },
            Some(_) = streams.join_next() => {
                if streams.is_empty() {
                    idle_since = Instant::now();
                }
            }
            () = idle => {
                log::debug!("{peer}: HTTP/2 connection idle for {keepalive:?}: GOAWAY");
                conn.abrupt_shutdown(Reason::NO_ERROR);
                break close(&mut conn).await;
            }
            () = ctx.stopping(), if !draining => {
                // GOAWAY: no new streams; those in flight finish.
                conn.graceful_shutdown();
                draining = true;
            }
            () = latest.retired(), if !draining => {
                log::debug!("{peer}: HTTP/2 connection's listener removed by a reload: GOAWAY");
                conn.graceful_shutdown();
                draining = true;
            }
            () = ctx.closing() => {
                streams.abort_all();
                conn.abrupt_shutdown(Reason::NO_ERROR);
                break close(&mut conn).await;
            }
            flood = alarm.tripped() => {
                let what = match flood {
                    Flood::Resets => "streams reset before their answer",
                    Flood::ControlFrames => "PING, SETTINGS, PRIORITY or empty frames",
                };
                log::warn!("{peer}: HTTP/2 connection closed with ENHANCE_YOUR_CALM: too many {what}");
                metrics::get().http2_flood();
                streams.abort_all();
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                break close(&mut conn).await;
            }
        }
    }
    // Streams still running lost their connection: dropping them resets their pipes.
    drop(streams);
    drop(places);
}

/// Lets a connection told to close write its GOAWAY, for a moment at most.
async fn close<T, B>(conn: &mut h2::server::Connection<T, B>)
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: bytes::Buf,
{
    let _ = tokio::time::timeout(CLOSE_WAIT, poll_fn(|cx| conn.poll_closed(cx))).await;
}
