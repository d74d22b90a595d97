//! HTTP/2 to the proxy (`http2 on`), driven through the real binary by the `h2` crate's
//! client over loopback (h2c by prior knowledge), and by raw frames where a well-behaved
//! client cannot misbehave enough: many CONNECT tunnels on one connection, refusals per
//! stream, half-closes and resets both ways, forwarding, flow control, limits, idle and
//! graceful closes, and the flood protections.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::{Method, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

/// `open_config` with HTTP/2 on, a forwarding location, and `extra`.
fn h2_config(extra: &str) -> String {
    open_config(&format!(
        "    http2 on;\n    location / {{ proxy_pass http://$http_host$request_uri; }}\n{extra}"
    ))
}

/// An HTTP/2 client connection: the handle that opens streams, and the task driving it (its
/// result says how the connection ended).
struct Client {
    send: SendRequest<Bytes>,
    driver: JoinHandle<Result<(), h2::Error>>,
}

async fn h2_client(proxy: SocketAddr) -> Client {
    h2_client_with(proxy, h2::client::Builder::new()).await
}

async fn h2_client_with(proxy: SocketAddr, builder: h2::client::Builder) -> Client {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (send, connection) = builder.handshake(tcp).await.unwrap();
    Client {
        send,
        driver: tokio::spawn(connection),
    }
}

impl Client {
    /// Opens a stream for `request` (not ended, so a body or tunnel may follow).
    async fn open(&mut self, request: Request<()>) -> (Response<RecvStream>, SendStream<Bytes>) {
        let (response, stream) = self.start(request).await;
        let response = tokio::time::timeout(WAIT, response)
            .await
            .expect("an answer")
            .expect("an answer, not a reset");
        (response, stream)
    }

    async fn start(
        &mut self,
        request: Request<()>,
    ) -> (h2::client::ResponseFuture, SendStream<Bytes>) {
        let mut ready = self.send.clone().ready().await.unwrap();
        ready.send_request(request, false).unwrap()
    }

    /// How the connection ended, once it has.
    async fn ended(self) -> Result<(), h2::Error> {
        drop(self.send);
        tokio::time::timeout(WAIT, self.driver)
            .await
            .expect("the connection ends")
            .unwrap()
    }
}

fn connect_request(target: &str) -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .body(())
        .unwrap()
}

/// Sends `data` on a stream, as its window allows.
async fn send_data(stream: &mut SendStream<Bytes>, data: &[u8], end: bool) {
    let mut data = Bytes::copy_from_slice(data);
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .unwrap()
            .unwrap();
        let part = data.split_to(granted.min(data.len()));
        stream.send_data(part, false).unwrap();
    }
    if end {
        stream.send_data(Bytes::new(), true).unwrap();
    }
}

/// Reads `len` bytes of a stream's DATA (releasing its window as it goes).
async fn read_exactly(body: &mut RecvStream, len: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        let data = tokio::time::timeout(WAIT, body.data())
            .await
            .expect("DATA in time")
            .expect("more DATA")
            .expect("DATA, not a reset");
        got.extend_from_slice(&data);
        body.flow_control().release_capacity(data.len()).unwrap();
    }
    got
}

/// Reads a stream's DATA to its END_STREAM.
async fn read_to_end(body: &mut RecvStream) -> Result<Vec<u8>, h2::Error> {
    let mut got = Vec::new();
    while let Some(data) = tokio::time::timeout(WAIT, body.data())
        .await
        .expect("DATA in time")
    {
        let data = data?;
        got.extend_from_slice(&data);
        body.flow_control().release_capacity(data.len()).unwrap();
    }
    Ok(got)
}

#[tokio::test]
async fn ten_tunnels_on_one_connection_each_echo_their_own_payload() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&h2_config(""));
    let mut client = h2_client(proxy.addr()).await;
    let mut tunnels = Vec::new();
    for seed in 0..10u64 {
        let (response, stream) = client.open(connect_request(&echo.to_string())).await;
        assert_eq!(response.status(), 200);
        tunnels.push((seed, response.into_body(), stream));
    }
    // All ten carry their bytes at once, interleaved on the one connection.
    let runs = tunnels.into_iter().map(|(seed, mut body, mut stream)| {
        tokio::spawn(async move {
            let payload = pattern(300_000 + seed as usize * 1000, seed);
            let reader = async {
                let back = read_exactly(&mut body, payload.len()).await;
                // The client's END_STREAM reached the echo origin, whose close came back.
                assert_eq!(read_to_end(&mut body).await.unwrap(), b"");
                back
            };
            let writer = send_data(&mut stream, &payload, true);
            let (back, ()) = tokio::join!(reader, writer);
            assert!(
                back == payload,
                "stream {seed} got other bytes than it sent"
            );
        })
    });
    for run in runs.collect::<Vec<_>>() {
        run.await.unwrap();
    }
    // HTTP/1.1 clients keep working on the same port.
    let (mut http1, head) = connect(proxy.addr(), &echo.to_string()).await;
    assert_eq!(head, established());
    http1.write_all(b"ping").await.unwrap();
    let mut back = [0; 4];
    http1.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test]
async fn a_refused_stream_gets_its_status_while_the_others_flow() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&format!(
        "server {{\n    listen 127.0.0.1:0;\n    http2 on;\n    proxy_connect;\n    \
         proxy_connect_allow {};\n    destination_allow 127.0.0.0/8;\n}}\n",
        echo.port()
    ));
    let mut client = h2_client(proxy.addr()).await;
    let (response, mut open) = client.open(connect_request(&echo.to_string())).await;
    assert_eq!(response.status(), 200);
    let mut open_body = response.into_body();
    send_data(&mut open, b"before", false).await;
    assert_eq!(read_exactly(&mut open_body, 6).await, b"before");

    // A port outside proxy_connect_allow: that stream's answer is 403 with a short body.
    let (refused, _stream) = client.open(connect_request("127.0.0.1:1")).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("connection").is_none());
    let body = read_to_end(&mut refused.into_body()).await.unwrap();
    assert!(String::from_utf8_lossy(&body).starts_with("403 Forbidden"));

    // The tunnel opened before goes on, and a new one opens.
    send_data(&mut open, b"after", false).await;
    assert_eq!(read_exactly(&mut open_body, 5).await, b"after");
    let (again, _stream) = client.open(connect_request(&echo.to_string())).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn end_stream_is_a_half_close_both_ways() {
    let sink = sink_server().await;
    let proxy = Proxy::start(&h2_config(""));
    let mut client = h2_client(proxy.addr()).await;
    let (response, mut stream) = client.open(connect_request(&sink.to_string())).await;
    assert_eq!(response.status(), 200);
    let up = pattern(500_000, 9);
    send_data(&mut stream, &up, true).await;
    // The sink answers only once it read to end of stream (our END_STREAM, passed on as a
    // FIN), and closes after it (its FIN, passed on as END_STREAM).
    let answer = read_to_end(&mut response.into_body()).await.unwrap();
    let fnv = Fnv::of(&up);
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        format!("{} {:016x}\n", fnv.len, fnv.hash)
    );
}

#[tokio::test]
async fn a_client_reset_resets_the_origin_connection() {
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let origin = serve("127.0.0.1:0", move |mut stream| {
        let accepted_tx = accepted_tx.clone();
        async move {
            let mut buf = vec![0; 1024];
            // Read until the tunnel ends, and say how.
            let end = loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break "fin",
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
                    Err(_) => break "error",
                }
            };
            let _ = accepted_tx.send(end);
        }
    })
    .await;
    let proxy = Proxy::start(&h2_config(""));
    let mut client = h2_client(proxy.addr()).await;
    let (response, mut stream) = client.open(connect_request(&origin.to_string())).await;
    assert_eq!(response.status(), 200);
    send_data(&mut stream, b"some bytes", false).await;
    stream.send_reset(Reason::CANCEL);
    let end = tokio::time::timeout(WAIT, accepted.recv()).await.unwrap();
    assert_eq!(end, Some("reset"));
}

/// A stream reset while its request waits for the origin ends that request at once, as a
/// client closing its HTTP/1.1 connection does: the origin's connection is closed rather than
/// held until the origin answers or `proxy_read_timeout`, and the request is logged as 499.
#[tokio::test]
async fn a_stream_reset_before_its_answer_closes_the_origin_connection() {
    let (slow, mut seen) = unanswering_origin(Duration::from_secs(60)).await;
    let proxy = Proxy::start(&h2_config(
        "    access_log stderr;\n    proxy_read_timeout 60s;",
    ));
    let client = h2_client(proxy.addr()).await;
    let mut ready = client.send.clone().ready().await.unwrap();
    let request = Request::get(format!("http://{slow}/slow"))
        .body(())
        .unwrap();
    let (_response, mut stream) = ready.send_request(request, true).unwrap();
    let mut next = async || tokio::time::timeout(WAIT, seen.recv()).await.ok().flatten();
    assert_eq!(next().await, Some("asked"));
    stream.send_reset(Reason::CANCEL);
    assert_eq!(
        next().await,
        Some("closed"),
        "the origin's connection outlived the stream"
    );
    proxy.wait_for_log("/slow HTTP/2.0\" 499 ").await;
}

#[tokio::test]
async fn an_origin_reset_resets_the_stream_and_only_it() {
    let echo = echo_server().await;
    let origin = serve("127.0.0.1:0", |stream| async move {
        let mut stream = stream;
        let _ = stream.write_all(b"hello").await;
        let mut buf = [0; 1];
        let _ = stream.read(&mut buf).await;
        // Closing with linger 0 sends a TCP reset.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    })
    .await;
    let proxy = Proxy::start(&h2_config(""));
    let mut client = h2_client(proxy.addr()).await;
    let (other, mut other_stream) = client.open(connect_request(&echo.to_string())).await;
    let mut other_body = other.into_body();
    let (response, mut stream) = client.open(connect_request(&origin.to_string())).await;
    let mut body = response.into_body();
    assert_eq!(read_exactly(&mut body, 5).await, b"hello");
    send_data(&mut stream, b"x", false).await;
    let error = read_to_end(&mut body).await.unwrap_err();
    assert_eq!(error.reason(), Some(Reason::CONNECT_ERROR), "{error:?}");
    send_data(&mut other_stream, b"still here", false).await;
    assert_eq!(read_exactly(&mut other_body, 10).await, b"still here");
}

#[tokio::test]
async fn requests_are_forwarded_as_http1_and_answered_on_their_stream() {
    let origin = Origin::start(|request| {
        if request.head.starts_with("POST") {
            return ok(&request.body);
        }
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Origin: yes\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec()
    })
    .await;
    let proxy = Proxy::start(&h2_config(""));
    let mut client = h2_client(proxy.addr()).await;
    let get = Request::builder()
        .uri(format!("http://{}/path?q=1", origin.addr))
        .header("x-client", "h2")
        .body(())
        .unwrap();
    let (response, mut request_body) = client.start(get).await;
    request_body.send_data(Bytes::new(), true).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-origin"], "yes");
    assert!(response.headers().get("transfer-encoding").is_none());
    let body = read_to_end(&mut response.into_body()).await.unwrap();
    assert_eq!(body, b"hello world");
    let recorded = &origin.recorded()[0];
    assert!(
        recorded.head.starts_with("GET /path?q=1 HTTP/1.1\r\n"),
        "{}",
        recorded.head
    );
    assert_eq!(
        recorded.header("host"),
        Some(origin.addr.to_string().as_str())
    );
    assert_eq!(recorded.header("x-client"), Some("h2"));

    // A body of unknown length goes up chunked; the answer comes back whole.
    let post = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/upload", origin.addr))
        .body(())
        .unwrap();
    let (response, mut request_body) = client.start(post).await;
    let up = pattern(200_000, 4);
    send_data(&mut request_body, &up, true).await;
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert!(read_to_end(&mut response.into_body()).await.unwrap() == up);
    assert!(origin.recorded()[1].body == up);
}

#[tokio::test]
async fn a_slow_reader_stalls_only_its_own_stream_and_sluice_holds_no_more_than_the_window() {
    const TOTAL: usize = 64 << 20;
    let written = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let source = serve("127.0.0.1:0", move |mut stream| {
        let counter = Arc::clone(&counter);
        async move {
            let chunk = pattern(64 * 1024, 11);
            while counter.load(Ordering::SeqCst) < TOTAL {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let echo = echo_server().await;
    let proxy = Proxy::start(&h2_config(""));
    // The client's connection window is large: only the stream's own window (64 KiB) stops
    // what the source sends from reaching the client.
    let mut builder = h2::client::Builder::new();
    builder.initial_connection_window_size(32 << 20);
    let mut client = h2_client_with(proxy.addr(), builder).await;
    let (slow, _slow_stream) = client.open(connect_request(&source.to_string())).await;
    assert_eq!(slow.status(), 200);

    // Another stream carries 2 MiB each way while the first is not read at all.
    let (fast, mut fast_stream) = client.open(connect_request(&echo.to_string())).await;
    let mut fast_body = fast.into_body();
    let payload = pattern(2 << 20, 5);
    let (back, ()) = tokio::join!(
        read_exactly(&mut fast_body, payload.len()),
        send_data(&mut fast_stream, &payload, false)
    );
    assert!(back == payload);

    // The source is held back: once its writes stop moving, what it got rid of is what the
    // sockets' buffers, sluice and the client's stream window hold, far from all of it.
    let deadline = Instant::now() + WAIT;
    let mut last = written.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the source never stalled ({now} bytes)"
        );
        last = now;
    }
    assert!(
        last < 24 << 20,
        "{last} bytes left the source: sluice buffers without bound"
    );
    // Reading the slow stream now delivers every byte in order.
    let mut body = slow.into_body();
    let got = read_exactly(&mut body, 1 << 20).await;
    assert!(got[..64 * 1024] == pattern(64 * 1024, 11)[..]);
}

/// The raw frames of a client that does what the `h2` client never would.
mod raw {
    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's high bits 0.
    fn integer(mut value: usize, n: u32, out: &mut Vec<u8>) {
        let max = (1usize << n) - 1;
        if value < max {
            out.push(value as u8);
            return;
        }
        out.push(max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128 + 128) as u8);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// A literal field without indexing, names and values not Huffman-coded.
    pub fn literal(name: &str, value: &[u8], out: &mut Vec<u8>) {
        out.push(0);
        integer(name.len(), 7, out);
        out.extend_from_slice(name.as_bytes());
        integer(value.len(), 7, out);
        out.extend_from_slice(value);
    }

    pub fn connect_block(authority: &str) -> Vec<u8> {
        let mut block = Vec::new();
        literal(":method", b"CONNECT", &mut block);
        literal(":authority", authority.as_bytes(), &mut block);
        block
    }

    pub struct Raw {
        pub stream: TcpStream,
        buf: Vec<u8>,
    }

    /// A frame as read: type, flags, stream, payload.
    pub type Frame = (u8, u8, u32, Vec<u8>);

    impl Raw {
        pub async fn open(proxy: SocketAddr) -> Raw {
            let mut stream = TcpStream::connect(proxy).await.unwrap();
            let mut hello = PREFACE.to_vec();
            hello.extend(frame(SETTINGS, 0, 0, &[]));
            stream.write_all(&hello).await.unwrap();
            Raw {
                stream,
                buf: Vec::new(),
            }
        }

        /// Writes, ignoring a connection the proxy already closed.
        pub async fn send(&mut self, bytes: &[u8]) -> bool {
            self.stream.write_all(bytes).await.is_ok()
        }

        /// The next frame, or `None` at the close.
        pub async fn next(&mut self) -> Option<Frame> {
            loop {
                if self.buf.len() >= 9 {
                    let len = (usize::from(self.buf[0]) << 16)
                        | (usize::from(self.buf[1]) << 8)
                        | usize::from(self.buf[2]);
                    if self.buf.len() >= 9 + len {
                        let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                        let id = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
                        return Some((head[3], head[4], id, head[9..].to_vec()));
                    }
                }
                let mut chunk = [0; 16384];
                match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                    .await
                    .expect("a frame or a close in time")
                {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }

        /// Reads until a GOAWAY; its error code, or `None` if the connection closed first.
        pub async fn goaway(&mut self) -> Option<u32> {
            while let Some((kind, _, _, payload)) = self.next().await {
                if kind == GOAWAY {
                    return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
            }
            None
        }
    }
}

use raw::Raw;

/// RFC 9113 §7 error codes.
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn streams_over_http2_max_concurrent_streams_are_refused() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&h2_config("    http2_max_concurrent_streams 2;"));
    // A well-behaved client reads the limit from sluice's SETTINGS.
    let client = h2_client(proxy.addr()).await;
    let mut ready = client.send.clone().ready().await.unwrap();
    let _ = ready.send_request(connect_request(&echo.to_string()), false);
    drop(client);

    // One that ignores it gets REFUSED_STREAM for the third stream; the first two are served.
    let mut raw = Raw::open(proxy.addr()).await;
    let block = raw::connect_block(&echo.to_string());
    for id in [1, 3, 5] {
        raw.send(&raw::frame(raw::HEADERS, raw::END_HEADERS, id, &block))
            .await;
    }
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    while answered.len() + refused.len() < 3 {
        let (kind, _, id, payload) = raw.next().await.expect("answers before a close");
        match kind {
            raw::HEADERS => answered.push(id),
            raw::RST_STREAM => {
                assert_eq!(
                    u32::from_be_bytes(payload[..4].try_into().unwrap()),
                    REFUSED_STREAM
                );
                refused.push(id);
            }
            _ => {}
        }
    }
    answered.sort();
    assert_eq!((answered, refused), (vec![1, 3], vec![5]));
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_keepalive_timeout_but_not_with_a_stream_open() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&h2_config("    keepalive_timeout 1s;"));
    let idle = h2_client(proxy.addr()).await;
    // Closed with a GOAWAY (NO_ERROR), which ends the client's connection cleanly.
    idle.ended().await.expect("a clean GOAWAY and close");

    let mut busy = h2_client(proxy.addr()).await;
    let (response, mut stream) = busy.open(connect_request(&echo.to_string())).await;
    let mut body = response.into_body();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send_data(&mut stream, b"alive", false).await;
    assert_eq!(read_exactly(&mut body, 5).await, b"alive");
}

/// Waits until the connection takes no new stream (a GOAWAY came).
async fn wait_until_refused(client: &Client, target: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        let refused = match client.send.clone().ready().await {
            Err(_) => true,
            Ok(mut ready) => match ready.send_request(connect_request(&target.to_string()), true) {
                Err(_) => true,
                Ok((response, _)) => tokio::time::timeout(WAIT, response).await.unwrap().is_err(),
            },
        };
        if refused {
            return;
        }
        assert!(Instant::now() < deadline, "new streams are still served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reload_that_removes_the_listener_says_goaway_and_lets_open_streams_finish() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&h2_config(""));
    let mut client = h2_client(proxy.addr()).await;
    let (response, mut stream) = client.open(connect_request(&echo.to_string())).await;
    let mut body = response.into_body();
    // A listener kept across a reload keeps its connections as they are.
    assert!(sighup(&proxy).await.contains("reloaded"));
    let (again, _again) = client.open(connect_request(&echo.to_string())).await;
    assert_eq!(again.status(), 200);
    // One the new configuration no longer has: GOAWAY, and open streams finish.
    let moved = h2_config("").replace("listen 127.0.0.1:0", "listen 127.0.0.2:0");
    std::fs::write(proxy.config_path(), moved).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded"));
    wait_until_refused(&client, echo).await;
    send_data(&mut stream, b"still open", true).await;
    assert_eq!(read_to_end(&mut body).await.unwrap(), b"still open");
}

#[tokio::test]
async fn a_graceful_shutdown_says_goaway_and_lets_open_streams_finish() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(&h2_config(""));
    let mut client = h2_client(proxy.addr()).await;
    let (response, mut stream) = client.open(connect_request(&echo.to_string())).await;
    let mut body = response.into_body();
    proxy.signal(libc::SIGQUIT);
    // No new stream is served once the GOAWAY has come...
    wait_until_refused(&client, echo).await;
    // ...while the tunnel opened before carries on until it ends.
    send_data(&mut stream, b"last words", true).await;
    assert_eq!(read_to_end(&mut body).await.unwrap(), b"last words");
    let status = proxy
        .wait_exit(WAIT)
        .await
        .expect("exits once the stream is done");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn rapid_reset_is_met_with_goaway_and_bounded_work() {
    let echo = echo_server().await;
    // An origin that holds each request unanswered until the next one arrives, then closes
    // it: every stream below cost sluice a policy check, a dial and a forwarded head, and the
    // client reset it before its answer (the next request's arrival proves sluice read that
    // reset first, as frames are read in order); the close lets sluice end the stream's task.
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    let held = Arc::new(std::sync::Mutex::new(None::<TcpStream>));
    let silent = serve("127.0.0.1:0", move |mut stream| {
        let (asked_tx, held) = (asked_tx.clone(), Arc::clone(&held));
        async move {
            if read_request_head(&mut stream).await.is_some() {
                drop(held.lock().unwrap().replace(stream));
                let _ = asked_tx.send(());
            }
        }
    })
    .await;
    let proxy = Proxy::start(&format!("status_listen 127.0.0.1:0;\n{}", h2_config("")));
    let rss_before = rss_kib(proxy.pid());
    // Each stream reaches sluice's stream task (its request is at the origin) and is reset
    // before it is answered: the attack that costs the server the most, which no
    // pending-accept limit sees, and sluice's reset budget does.
    let client = h2_client(proxy.addr()).await;
    let mut resets = 0;
    for _ in 0..5000 {
        let Ok(mut ready) = client.send.clone().ready().await else {
            break;
        };
        let request = Request::get(format!("http://{silent}/slow"))
            .body(())
            .unwrap();
        let Ok((response, mut stream)) = ready.send_request(request, true) else {
            break;
        };
        let reached = async {
            tokio::select! {
                asked = asked.recv() => asked.is_some(),
                // Never answered: this is the connection closing.
                _ = response => false,
            }
        };
        if !tokio::time::timeout(WAIT, reached)
            .await
            .expect("at the origin or closed")
        {
            break;
        }
        stream.send_reset(Reason::CANCEL);
        resets += 1;
    }
    let error = client.ended().await.expect_err("closed with an error");
    assert_eq!(error.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{error:?}");
    assert!(resets < 1000, "{resets} resets before the GOAWAY");
    proxy
        .wait_for_log("too many streams reset before their answer")
        .await;

    // Resets sent back to back, before sluice could accept the streams, too.
    for _ in 0..4 {
        let mut raw = Raw::open(proxy.addr()).await;
        let block = raw::connect_block(&echo.to_string());
        let mut flood = Vec::new();
        for i in 0..2000u32 {
            let id = 2 * i + 1;
            flood.extend(raw::frame(raw::HEADERS, raw::END_HEADERS, id, &block));
            flood.extend(raw::frame(raw::RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        raw.send(&flood).await;
        assert_eq!(raw.goaway().await, Some(ENHANCE_YOUR_CALM));
    }
    // The work was bounded: few streams were served at all, and memory did not follow the
    // 13,000 streams asked for. When `h2`'s own limit closes a connection, the GOAWAY is on
    // the wire before sluice counts it, so the count may trail the client by a moment.
    let metrics = scrape_until(&proxy, |m| metric(m, "sluice_http2_floods_total") >= 5.0).await;
    let served = metric(&metrics, "sluice_http2_streams_total");
    assert!(served < 2000.0, "{served} streams served");
    assert_eq!(metric(&metrics, "sluice_http2_floods_total"), 5.0);
    let grown = rss_kib(proxy.pid()).saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
    // And the proxy still serves.
    let mut client = h2_client(proxy.addr()).await;
    let (response, _stream) = client.open(connect_request(&echo.to_string())).await;
    assert_eq!(response.status(), 200);
}

/// A browser closes a finished tunnel with RST_STREAM `CANCEL` (Chrome does). Answered
/// streams reset cost no more than HTTP/1.1 connections opened and closed, so however many a
/// busy browser closes, its connection and every tunnel on it live.
#[tokio::test]
async fn a_browser_closing_many_answered_tunnels_keeps_its_connection() {
    let echo = echo_server().await;
    // Before, a burst of 2 × 10 resets, then one a second, were allowed.
    let proxy = Proxy::start(&h2_config("    http2_max_concurrent_streams 10;"));
    let client = h2_client(proxy.addr()).await;
    const WORKERS: usize = 5;
    const TUNNELS_EACH: usize = 20;
    // Half the streams allowed at once, so streams sluice is still winding down never push a
    // new one past the limit.
    let workers = (0..WORKERS).map(|worker| {
        let send = client.send.clone();
        let target = echo.to_string();
        tokio::spawn(async move {
            for tunnel in 0..TUNNELS_EACH {
                let mut ready = send.clone().ready().await.expect("the connection lives");
                let (response, mut stream) = ready
                    .send_request(connect_request(&target), false)
                    .expect("the connection lives");
                let response = tokio::time::timeout(WAIT, response)
                    .await
                    .expect("an answer in time")
                    .expect("an answer, not a reset");
                assert_eq!(response.status(), 200);
                let mut body = response.into_body();
                let payload = format!("worker {worker} tunnel {tunnel}");
                send_data(&mut stream, payload.as_bytes(), false).await;
                assert_eq!(
                    read_exactly(&mut body, payload.len()).await,
                    payload.as_bytes()
                );
                stream.send_reset(Reason::CANCEL);
            }
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.unwrap();
    }
    assert!(!client.driver.is_finished(), "the connection was closed");
    let mut client = client;
    let (response, _stream) = client.open(connect_request(&echo.to_string())).await;
    assert_eq!(response.status(), 200);
    assert!(
        !proxy.log().contains("ENHANCE_YOUR_CALM"),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn ping_and_settings_floods_are_met_with_goaway() {
    let proxy = Proxy::start(&h2_config(""));
    for (kind, payload) in [(raw::PING, vec![0u8; 8]), (raw::SETTINGS, Vec::new())] {
        let mut raw = Raw::open(proxy.addr()).await;
        let mut flood = Vec::new();
        for _ in 0..1000 {
            flood.extend(raw::frame(kind, 0, 0, &payload));
        }
        raw.send(&flood).await;
        let code = raw.goaway().await;
        assert_eq!(code, Some(ENHANCE_YOUR_CALM), "frame type {kind}");
    }
}

#[tokio::test]
async fn oversized_headers_and_continuation_floods_are_refused() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&h2_config(""));
    // A header list over large_client_header_buffers (32 KiB here): 431, the connection lives.
    let mut client = h2_client(proxy.addr()).await;
    let big = Request::builder()
        .method(Method::CONNECT)
        .uri(echo.to_string())
        .header("x-big", "a".repeat(40_000))
        .body(())
        .unwrap();
    let (response, _stream) = client.start(big).await;
    match tokio::time::timeout(WAIT, response).await.unwrap() {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(error) => assert!(error.is_reset(), "{error:?}"),
    }
    let (response, _stream) = client.open(connect_request(&echo.to_string())).await;
    assert_eq!(response.status(), 200);

    // A header block that never ends, in CONTINUATION frames: the connection is closed long
    // before the 4 MiB it would take.
    let mut raw = Raw::open(proxy.addr()).await;
    let mut block = Vec::new();
    raw::literal(":method", b"CONNECT", &mut block);
    raw.send(&raw::frame(raw::HEADERS, 0, 1, &block)).await;
    let mut sent = 0;
    let filler = {
        let mut filler = Vec::new();
        raw::literal("x-filler", &[b'a'; 1000], &mut filler);
        filler
    };
    let closed = loop {
        if sent >= 4 << 20
            || !raw
                .send(&raw::frame(raw::CONTINUATION, 0, 1, &filler))
                .await
        {
            break sent < 4 << 20;
        }
        sent += filler.len();
        if sent % (256 * 1024) < filler.len() {
            // Let a GOAWAY arrive without blocking on it.
            let mut peek = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), raw.stream.peek(&mut peek)).await
            {
                break true;
            }
        }
    };
    let goaway = raw.goaway().await;
    assert!(closed || goaway.is_some(), "4 MiB of header block taken");
    assert!(goaway.is_some_and(|code| code != 0), "{goaway:?}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `/metrics` from the status listener (its address is in the startup log).
async fn scrape(proxy: &Proxy) -> String {
    let line = proxy.wait_for_log("(status_listen in ").await;
    let after = line.split(" on ").nth(1).unwrap();
    let addr: SocketAddr = after.split_once(' ').unwrap().0.parse().unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).await.unwrap();
    all
}

/// `/metrics` once `ready` holds of it, or as it is after [`WAIT`].
async fn scrape_until(proxy: &Proxy, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = scrape(proxy).await;
        if ready(&metrics) || tokio::time::Instant::now() >= deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn each_stream_is_logged_as_http2_and_counted() {
    let echo = echo_server().await;
    let origin = Origin::start(|_| ok(b"hi")).await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&format!(
        "http {{\n    log_format p '$server_protocol|$request|$status';\n{}}}\n",
        h2_config(&format!("    access_log {} p;", log.display()))
    ));
    let mut client = h2_client(proxy.addr()).await;
    let (response, mut stream) = client.open(connect_request(&echo.to_string())).await;
    send_data(&mut stream, b"x", true).await;
    read_to_end(&mut response.into_body()).await.unwrap();
    let get = Request::builder()
        .uri(format!("http://{}/", origin.addr))
        .body(())
        .unwrap();
    let (response, mut stream) = client.start(get).await;
    stream.send_data(Bytes::new(), true).unwrap();
    read_to_end(
        &mut tokio::time::timeout(WAIT, response)
            .await
            .unwrap()
            .unwrap()
            .into_body(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(Instant::now() < deadline, "log lines missing: {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut lines: Vec<&str> = lines.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("HTTP/2.0|CONNECT {echo} HTTP/2.0|200"),
            format!("HTTP/2.0|GET http://{}/ HTTP/2.0|200", origin.addr),
        ]
    );
}

#[tokio::test]
async fn proxy_authorization_is_checked_per_stream() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let users = dir.0.join("htpasswd");
    std::fs::write(&users, "kim:{PLAIN}secret\n").unwrap();
    let proxy = Proxy::start(&h2_config(&format!(
        "    auth_basic \"h2 test\";\n    auth_basic_user_file {};",
        users.display()
    )));
    let mut client = h2_client(proxy.addr()).await;
    // Without credentials: 407 with the challenge, on that stream only.
    let (refused, _stream) = client.open(connect_request(&echo.to_string())).await;
    assert_eq!(refused.status(), 407);
    assert_eq!(
        refused.headers()["proxy-authenticate"],
        "Basic realm=\"h2 test\""
    );
    // With them, in the proxy-authorization field: the tunnel opens.
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(echo.to_string())
        .header("proxy-authorization", basic("kim", "secret"))
        .body(())
        .unwrap();
    let (response, mut stream) = client.open(request).await;
    assert_eq!(response.status(), 200);
    send_data(&mut stream, b"let in", true).await;
    assert_eq!(
        read_to_end(&mut response.into_body()).await.unwrap(),
        b"let in"
    );
}

#[tokio::test]
async fn a_connect_with_scheme_or_path_is_a_stream_error() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&h2_config(""));
    let mut raw = Raw::open(proxy.addr()).await;
    let mut block = raw::connect_block(&echo.to_string());
    raw::literal(":scheme", b"https", &mut block);
    raw::literal(":path", b"/", &mut block);
    raw.send(&raw::frame(raw::HEADERS, raw::END_HEADERS, 1, &block))
        .await;
    // The malformed stream is reset (PROTOCOL_ERROR); a good one after it is served.
    let good = raw::connect_block(&echo.to_string());
    raw.send(&raw::frame(raw::HEADERS, raw::END_HEADERS, 3, &good))
        .await;
    let (mut reset, mut answered) = (None, false);
    while reset.is_none() || !answered {
        let (kind, _, id, payload) = raw.next().await.expect("frames before a close");
        match (kind, id) {
            (raw::RST_STREAM, 1) => {
                reset = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
            (raw::HEADERS, 3) => answered = true,
            (raw::HEADERS | raw::GOAWAY, _) => panic!("frame {kind} on stream {id}"),
            _ => {}
        }
    }
    assert_eq!(reset, Some(0x1));
}
