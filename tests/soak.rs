//! Soak: a few hundred concurrent clients against the real binary for a bounded time, with
//! faults mixed in, then checks that nothing was corrupted, nothing failed silently and
//! nothing leaked.
//!
//! The mix, per client, until the time is up:
//! - CONNECT tunnels to an exchange origin: random-size transfers both ways at once, SHA-256
//!   checked at both ends (the origin reports what it received and what it sent); to an IP
//!   literal or to a name served by a loopback DNS server;
//! - slow readers (the download read in small pieces with pauses: backpressure);
//! - clients that vanish mid-transfer (a close or a reset), in tunnels and in request bodies;
//! - origins that reset mid-transfer, in tunnels and in forwarded responses;
//! - plain-HTTP keep-alive sessions: GETs and POSTs (Content-Length and chunked), SHA-256
//!   checked both ways;
//! - targets that refuse (a closed port), names that fail to resolve (NXDOMAIN);
//! - slowloris heads (one byte at a time, past `client_header_timeout`).
//!
//! Asserted: zero corrupted or lost bytes on completed transfers; every failure reaches the
//! client as a status or a closed connection (no hang), an origin's reset in a tunnel as a
//! reset, a stalled head as a 408; after each half of the load, sluice's open file
//! descriptors return to their figure before it, and its RSS stays within a small margin of
//! it and does not grow from one half to the next; a fresh CONNECT still works. The figures
//! are printed (run with `--nocapture` to see them).
//!
//! `soak_short` runs in CI (12 s of load, 200 clients). `soak` is the long one:
//! `SLUICE_SOAK_SECS` (default 60) and `SLUICE_SOAK_CLIENTS` (default 300), e.g.
//! `SLUICE_SOAK_SECS=300 cargo test --release --test soak -- --ignored --nocapture`.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{PATIENCE, Proxy, open_config, pattern, read_head, read_response};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, sleep, timeout};

/// Longest a tunnel client waits for its next byte before it counts as a hang.
const STALL: Duration = Duration::from_secs(10);
/// `client_header_timeout` of the proxy under test: slowloris clients must get their 408.
const HEADER_TIMEOUT_SECS: u64 = 2;
/// The same, as a duration.
const HEADER_TIMEOUT: Duration = Duration::from_secs(HEADER_TIMEOUT_SECS);
/// `keepalive_timeout` of the proxy under test: how long a client connection may wait
/// between two requests.
const KEEPALIVE_SECS: u64 = 5;
/// Open descriptors allowed above the warm figure once the load has settled (sockets still
/// closing).
const FD_MARGIN: usize = 4;
/// Growth of RSS allowed after the load: what the allocator keeps from the peak, not a leak.
/// 16 MiB, or a tunnel's two 32 KiB buffers per client if that is more.
fn rss_margin(clients: usize) -> u64 {
    (16 << 20).max(clients as u64 * 64 * 1024)
}
/// Growth of RSS allowed from the end of the first half of the load to the end of the second.
const RSS_GROWTH: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    soak_for(Duration::from_secs(12), 200, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: SLUICE_SOAK_SECS (default 60) of load; run with --ignored"]
async fn soak() {
    let secs = env_number("SLUICE_SOAK_SECS", 60);
    let clients = env_number("SLUICE_SOAK_CLIENTS", 300);
    soak_for(
        Duration::from_secs(secs),
        clients as usize,
        Duration::from_secs(90),
    )
    .await;
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ───────────────────────────── data ─────────────────────────────

const BLOCK_LEN: usize = 8 << 20;

/// Random bytes every transfer takes its data from, at an offset given by its seed.
fn block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| pattern(BLOCK_LEN, 0x50a4))
}

/// The `len` bytes of the transfer with this seed, in pieces of at most 16 KiB.
fn data(seed: u64, len: usize) -> impl Iterator<Item = &'static [u8]> {
    let block = block();
    let mut offset = (seed % BLOCK_LEN as u64) as usize;
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(16 * 1024).min(BLOCK_LEN - offset);
        let piece = &block[offset..offset + n];
        offset = (offset + n) % BLOCK_LEN;
        left -= n;
        Some(piece)
    })
}

fn sha_of(seed: u64, len: usize) -> [u8; 32] {
    let mut sha = Sha256::new();
    data(seed, len).for_each(|p| sha.update(p));
    sha.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// xorshift64*: each client's own reproducible choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A size up to `max`, spread evenly over the orders of magnitude (0 included).
    fn size(&mut self, max: usize) -> usize {
        let bits = self.below(max.ilog2() as u64 + 2) as u32;
        if bits == 0 {
            return 0;
        }
        let low = 1usize << (bits - 1);
        (low + self.below(low as u64) as usize).min(max)
    }
}

// ───────────────────────────── counters ─────────────────────────────

#[derive(Default)]
struct Stats {
    tunnels: AtomicU64,
    http_requests: AtomicU64,
    http_sessions: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    // Faults injected.
    client_vanished: AtomicU64,
    origin_reset: AtomicU64,
    refused: AtomicU64,
    dns_failed: AtomicU64,
    slow_readers: AtomicU64,
    slowloris: AtomicU64,
    // Outcomes that must stay at zero.
    corrupted: AtomicU64,
    lost: AtomicU64,
    hangs: AtomicU64,
    unexpected: AtomicU64,
    reset_as_close: AtomicU64,
    slowest_tunnel_ms: AtomicU64,
    closed_without_408: AtomicU64,
    /// Requests this test was too slow for (a loaded machine): they left after
    /// `client_header_timeout` or `keepalive_timeout` had run out, so a close without an
    /// answer was right.
    late: AtomicU64,
    problems: Mutex<Vec<String>>,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records a bad outcome with what happened, for the failure message.
    fn problem(&self, counter: &AtomicU64, what: String) {
        Stats::add(counter, 1);
        let mut problems = self.problems.lock().unwrap();
        if problems.len() < 20 {
            problems.push(what);
        }
    }
}

// ───────────────────────────── origins ─────────────────────────────

/// What the exchange origin is asked to do (first byte of the exchange header).
const NORMAL: u8 = 0;
const RESET: u8 = 1;

/// The tunnel origin. Reads a 17-byte header `[kind][up u32][down u32][seed u64]`, then
/// at once receives `up` bytes and sends `down` bytes of `data(seed)`; then sends
/// SHA-256(what it received) and SHA-256(what it sent) and closes. `RESET` sends half of
/// `down` and resets the connection instead.
async fn exchange_origin() -> SocketAddr {
    common::serve("127.0.0.1:0", |mut stream| async move {
        let _ = timeout(Duration::from_secs(60), async move {
            let mut header = [0u8; 17];
            stream.read_exact(&mut header).await.ok()?;
            let kind = header[0];
            let up = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
            let down = u32::from_be_bytes(header[5..9].try_into().unwrap()) as usize;
            let seed = u64::from_be_bytes(header[9..17].try_into().unwrap());
            if kind == RESET {
                for piece in data(seed, down / 2) {
                    stream.write_all(piece).await.ok()?;
                }
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .ok()?;
                return None;
            }
            let (mut r, mut w) = stream.split();
            let receive = async {
                let mut sha = Sha256::new();
                let mut buf = vec![0; 16 * 1024];
                let mut left = up;
                while left > 0 {
                    let n = r.read(&mut buf[..left.min(16 * 1024)]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    sha.update(&buf[..n]);
                    left -= n;
                }
                Ok::<_, std::io::Error>(sha.finalize())
            };
            let send = async {
                let mut sha = Sha256::new();
                for piece in data(seed, down) {
                    w.write_all(piece).await?;
                    sha.update(piece);
                }
                Ok::<_, std::io::Error>(sha.finalize())
            };
            let (received, sent) = tokio::try_join!(receive, send).ok()?;
            w.write_all(&received).await.ok()?;
            w.write_all(&sent).await.ok()?;
            w.shutdown().await.ok()?;
            // Wait for the client's close, so the close is always the client's to start.
            let mut rest = [0u8; 1];
            let _ = r.read(&mut rest).await;
            Some(())
        })
        .await;
    })
    .await
}

/// A keep-alive HTTP/1.1 origin. `GET|POST /data?size=N&seed=S` answers `N` bytes of
/// `data(S)` with `X-Up-Sha256` (of the request body it received) and `X-Down-Sha256` (of the
/// body it sends). `/reset?size=N&seed=S` sends the head and half the body, then resets.
/// Idle connections stay open until `closing` is set, then close within 200 ms.
async fn http_origin(closing: Arc<AtomicBool>) -> SocketAddr {
    common::serve("127.0.0.1:0", move |stream| {
        let closing = closing.clone();
        async move {
            let _ = timeout(Duration::from_secs(120), serve_http(stream, closing)).await;
        }
    })
    .await
}

struct Buffered {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Buffered {
    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Some(line);
            }
            self.fill().await?;
        }
    }

    /// Reads `n` body bytes into `sha`.
    async fn body(&mut self, mut n: usize, sha: &mut Sha256) -> Option<()> {
        while n > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let take = n.min(self.buf.len());
            sha.update(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take;
        }
        Some(())
    }
}

fn query_number(target: &str, name: &str) -> Option<u64> {
    target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

async fn serve_http(stream: TcpStream, closing: Arc<AtomicBool>) -> Option<()> {
    let mut conn = Buffered {
        stream,
        buf: Vec::new(),
    };
    loop {
        // Between requests: wait for the next one, or for the end of the load.
        while conn.buf.is_empty() {
            let mut probe = [0u8; 16 * 1024];
            match timeout(Duration::from_millis(200), conn.stream.read(&mut probe)).await {
                Err(_) if closing.load(Ordering::SeqCst) => return None,
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => return None,
                Ok(Ok(n)) => conn.buf.extend_from_slice(&probe[..n]),
            }
        }
        let request_line = conn.line().await?;
        let target = request_line.split(' ').nth(1)?.to_string();
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            let line = conn.line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().ok()?,
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut up = Sha256::new();
        if chunked {
            loop {
                let size_line = conn.line().await?;
                let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    while !conn.line().await?.is_empty() {}
                    break;
                }
                conn.body(size, &mut up).await?;
                if !conn.line().await?.is_empty() {
                    return None;
                }
            }
        } else {
            conn.body(length, &mut up).await?;
        }
        let size = query_number(&target, "size").unwrap_or(0) as usize;
        let seed = query_number(&target, "seed").unwrap_or(0);
        let up_sha = hex(&up.finalize());
        if target.starts_with("/reset") {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            conn.stream.write_all(head.as_bytes()).await.ok()?;
            for piece in data(seed, size / 2) {
                conn.stream.write_all(piece).await.ok()?;
            }
            socket2::SockRef::from(&conn.stream)
                .set_linger(Some(Duration::ZERO))
                .ok()?;
            return None;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nX-Up-Sha256: {up_sha}\r\n\
             X-Down-Sha256: {}\r\n{}\r\n",
            hex(&sha_of(seed, size)),
            if close { "Connection: close\r\n" } else { "" }
        );
        conn.stream.write_all(head.as_bytes()).await.ok()?;
        for piece in data(seed, size) {
            conn.stream.write_all(piece).await.ok()?;
        }
        if close {
            return None;
        }
    }
}

/// A name server on loopback UDP: names whose first label starts with `fail` are NXDOMAIN,
/// every other A query is answered 127.0.0.1.
async fn dns_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if let Some(answer) = dns_answer(&buf[..n]) {
                let _ = socket.send_to(&answer, from).await;
            }
        }
    });
    addr
}

fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to a zero byte, then QTYPE and QCLASS.
    let mut pos = 12;
    let mut first_label = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        if len == 0 {
            break;
        }
        if first_label.is_empty() {
            first_label = query.get(pos + 1..pos + 1 + len)?.to_vec();
        }
        pos += 1 + len;
    }
    let question_end = pos + 5;
    let qtype = u16::from_be_bytes([*query.get(pos + 1)?, *query.get(pos + 2)?]);
    let question = query.get(12..question_end)?;
    let fail = first_label.starts_with(b"fail");
    let answer_a = !fail && qtype == 1;
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&query[..2]); // ID
    let rd = query[2] & 0x01;
    out.push(0x80 | rd); // QR, opcode 0, RD as asked
    out.push(0x80 | if fail { 3 } else { 0 }); // RA, NXDOMAIN or NOERROR
    out.extend_from_slice(&[0, 1, 0, u8::from(answer_a), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if answer_a {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

// ───────────────────────────── clients ─────────────────────────────

/// Everything a client needs to know about the test setup.
struct Setup {
    proxy: SocketAddr,
    exchange: SocketAddr,
    http: SocketAddr,
    closed_port: u16,
    /// Longest any one client operation may take before it counts as a hang.
    op_timeout: Duration,
    stats: Stats,
}

impl Setup {
    /// The exchange origin as a CONNECT target: its address, or a name the DNS server knows.
    fn exchange_target(&self, rng: &mut Rng) -> String {
        if rng.below(3) == 0 {
            format!("ok-{}.soak.test:{}", rng.below(50), self.exchange.port())
        } else {
            self.exchange.to_string()
        }
    }

    fn http_authority(&self, rng: &mut Rng) -> String {
        if rng.below(3) == 0 {
            format!("origin.soak.test:{}", self.http.port())
        } else {
            self.http.to_string()
        }
    }
}

/// Whether a client that got no answer at all was too slow itself: its request left at `sent`,
/// `allowed` or more after `since`, an instant no later than the one sluice's timer started at
/// (the accept, for `client_header_timeout`; the end of the previous response, for
/// `keepalive_timeout`). A silent close is then the right answer. A loaded machine can leave
/// a task unpolled for seconds between its connect and its write.
fn too_late(setup: &Setup, since: Instant, sent: Instant, allowed: Duration) -> bool {
    let late = sent.duration_since(since) >= allowed;
    if late {
        Stats::add(&setup.stats.late, 1);
    }
    late
}

/// Opens a tunnel; `None` (and a recorded problem) if the proxy did not answer 200.
async fn open_tunnel(setup: &Setup, target: &str) -> Option<TcpStream> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(setup.proxy).await.ok()?;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let sent = Instant::now();
    let head = read_head(&mut stream).await;
    if head.starts_with("HTTP/1.1 200 ") {
        Some(stream)
    } else if head.is_empty() && too_late(setup, started, sent, HEADER_TIMEOUT) {
        None
    } else {
        setup.stats.problem(
            &setup.stats.unexpected,
            format!("CONNECT {target} answered {head:?}"),
        );
        None
    }
}

/// How a tunnel client behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TunnelMode {
    Normal,
    SlowReader,
    /// Sends this many upload bytes, then disappears (a reset if `rst`).
    Vanish {
        after: usize,
        rst: bool,
    },
    OriginReset,
}

async fn tunnel_client(setup: &Setup, rng: &mut Rng, mode: TunnelMode) {
    let stats = &setup.stats;
    let target = setup.exchange_target(rng);
    let (up, down) = match mode {
        TunnelMode::SlowReader => (rng.size(64 * 1024), (512 << 10) + rng.size(512 << 10)),
        TunnelMode::Vanish { .. } => (64 * 1024 + rng.size(1 << 20), rng.size(1 << 20)),
        TunnelMode::OriginReset => (0, 64 * 1024 + rng.size(1 << 20)),
        TunnelMode::Normal => (rng.size(1 << 20), rng.size(1 << 20)),
    };
    let (up_seed, down_seed) = (rng.next(), rng.next());
    let Some(stream) = open_tunnel(setup, &target).await else {
        return;
    };
    let mut header = vec![if mode == TunnelMode::OriginReset {
        RESET
    } else {
        NORMAL
    }];
    header.extend_from_slice(&(up as u32).to_be_bytes());
    header.extend_from_slice(&(down as u32).to_be_bytes());
    header.extend_from_slice(&down_seed.to_be_bytes());

    if let TunnelMode::Vanish { after, rst } = mode {
        let mut stream = stream;
        let _ = stream.write_all(&header).await;
        for piece in data(up_seed, after.min(up)) {
            if stream.write_all(piece).await.is_err() {
                break;
            }
        }
        if rst {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        Stats::add(&stats.client_vanished, 1);
        return;
    }

    let (mut r, mut w) = stream.into_split();
    let send = async move {
        let mut sha = Sha256::new();
        w.write_all(&header).await?;
        for piece in data(up_seed, up) {
            w.write_all(piece).await?;
            sha.update(piece);
        }
        // The write half stays open until the answer is in: the origin waits for our close.
        Ok::<_, std::io::Error>((sha.finalize(), w))
    };
    let slow = mode == TunnelMode::SlowReader;
    let pause = Duration::from_millis(2 + rng.below(8));
    let receive = async {
        let mut sha = Sha256::new();
        let mut trailer = Vec::new();
        let mut got = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let want = if slow { 8192 } else { buf.len() };
            let n = match timeout(STALL, r.read(&mut buf[..want])).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return (got, sha.finalize(), trailer, Some(e)),
                Err(_) => {
                    let stalled = std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled");
                    return (got, sha.finalize(), trailer, Some(stalled));
                }
            };
            if n == 0 {
                return (got, sha.finalize(), trailer, None);
            }
            let body = n.min(down - got.min(down));
            sha.update(&buf[..body]);
            trailer.extend_from_slice(&buf[body..n]);
            got += n;
            if slow && got < down {
                sleep(pause).await;
            }
        }
    };
    let started = Instant::now();
    let (sent, (got, received_sha, trailer, error)) = tokio::join!(send, receive);
    stats
        .slowest_tunnel_ms
        .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    if error
        .as_ref()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    {
        stats.problem(
            &stats.hangs,
            format!(
                "tunnel to {target} ({mode:?}): no byte for {STALL:?} after {got} of {}",
                down + 64
            ),
        );
        return;
    }
    Stats::add(&stats.bytes_up, up as u64);
    Stats::add(&stats.bytes_down, got.min(down) as u64);
    match mode {
        TunnelMode::OriginReset => {
            Stats::add(&stats.origin_reset, 1);
            if got >= down + 64 {
                stats.problem(
                    &stats.unexpected,
                    format!("a reset tunnel delivered all {got} bytes"),
                );
            } else if error.is_none() {
                // sluice passes a reset on as a reset: a plain close could pass for the end.
                stats.problem(
                    &stats.reset_as_close,
                    format!("tunnel to {target}: the origin's reset arrived as a plain close"),
                );
            }
        }
        _ => {
            if slow {
                Stats::add(&stats.slow_readers, 1);
            }
            let complete = got == down + 64 && error.is_none();
            if !complete || sent.is_err() {
                stats.problem(
                    &stats.lost,
                    format!(
                        "tunnel to {target}: {got} of {} bytes, upload {:?}, read error {error:?}",
                        down + 64,
                        sent.as_ref().err()
                    ),
                );
                return;
            }
            let up_sha = sent.unwrap().0;
            // What the origin received is what we sent; what we received is what it sent.
            if trailer[..32] != up_sha[..] || trailer[32..] != received_sha[..] {
                stats.problem(
                    &stats.corrupted,
                    format!("tunnel to {target}: {up} up / {down} down, hashes differ"),
                );
                return;
            }
            Stats::add(&stats.tunnels, 1);
        }
    }
}

/// A keep-alive session of a few requests; may end in an origin reset or a vanishing client.
async fn http_client(setup: &Setup, rng: &mut Rng) {
    let stats = &setup.stats;
    let authority = setup.http_authority(rng);
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(setup.proxy).await else {
        stats.problem(&stats.unexpected, "cannot connect to the proxy".into());
        return;
    };
    let mut buf = Vec::new();
    let requests = 1 + rng.below(6);
    let (mut idle_since, mut allowed_idle) = (started, HEADER_TIMEOUT);
    for i in 0..requests {
        let last = i + 1 == requests;
        let (size, seed) = (rng.size(256 * 1024), rng.next());
        let fault = rng.below(20);
        if last && fault == 0 {
            // The origin resets halfway through the response.
            let request = format!(
                "GET http://{authority}/reset?size={}&seed={seed} HTTP/1.1\r\nHost: {authority}\r\n\r\n",
                64 * 1024 + size
            );
            if stream.write_all(request.as_bytes()).await.is_err() {
                stats.problem(&stats.unexpected, "request write failed".into());
                return;
            }
            Stats::add(&stats.origin_reset, 1);
            if let Some((status, ..)) = read_response(&mut stream, &mut buf, false).await {
                stats.problem(
                    &stats.unexpected,
                    format!("a reset response arrived whole ({status})"),
                );
            }
            return;
        }
        if last && fault == 1 {
            // The client vanishes in the middle of its request body.
            let head = format!(
                "POST http://{authority}/data?size=0&seed=0 HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\n\r\n",
                1 << 20
            );
            let _ = stream.write_all(head.as_bytes()).await;
            for piece in data(seed, 64 * 1024) {
                let _ = stream.write_all(piece).await;
            }
            if rng.below(2) == 0 {
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
            Stats::add(&stats.client_vanished, 1);
            return;
        }
        let body_len = match rng.below(3) {
            0 => None,
            _ => Some(rng.size(256 * 1024)),
        };
        let body_seed = rng.next();
        let chunked = body_len.is_some() && rng.below(2) == 0;
        let connection = if last && rng.below(2) == 0 {
            "Connection: close\r\n"
        } else {
            ""
        };
        let method = if body_len.is_some() { "POST" } else { "GET" };
        let mut request = format!(
            "{method} http://{authority}/data?size={size}&seed={seed} HTTP/1.1\r\nHost: {authority}\r\n{connection}"
        )
        .into_bytes();
        match (body_len, chunked) {
            (None, _) => request.extend_from_slice(b"\r\n"),
            (Some(len), false) => {
                request.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
                data(body_seed, len).for_each(|p| request.extend_from_slice(p));
            }
            (Some(len), true) => {
                request.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for piece in data(body_seed, len) {
                    // Split each piece again at a random point: chunks of many sizes.
                    let cut = rng.below(piece.len() as u64 + 1) as usize;
                    for part in [&piece[..cut], &piece[cut..]] {
                        if !part.is_empty() {
                            request.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                            request.extend_from_slice(part);
                            request.extend_from_slice(b"\r\n");
                        }
                    }
                }
                request.extend_from_slice(b"0\r\n\r\n");
            }
        }
        let write = stream.write_all(&request);
        let written = write.await;
        // A request that left too late (client_header_timeout after the connect for the
        // first, keepalive_timeout after the previous one for the others) may be met with a
        // close: sluice's wait began no earlier than `idle_since`, which the previous
        // response could not end before.
        let late = |sent| too_late(setup, idle_since, sent, allowed_idle);
        if written.is_err() {
            if !late(Instant::now()) {
                stats.problem(
                    &stats.lost,
                    format!("request {i} to {authority}: write failed"),
                );
            }
            return;
        }
        let sent = Instant::now();
        let Some((status, head, body)) = read_response(&mut stream, &mut buf, false).await else {
            if late(sent) {
                return;
            }
            stats.problem(
                &stats.lost,
                format!("request {i} to {authority}: no complete response"),
            );
            return;
        };
        Stats::add(&stats.bytes_up, body_len.unwrap_or(0) as u64);
        Stats::add(&stats.bytes_down, body.len() as u64);
        let header = |name: &str| {
            head.split("\r\n").find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let up_expected = hex(&sha_of(body_seed, body_len.unwrap_or(0)));
        let down_got = hex(&Sha256::digest(&body));
        if status != 200
            || header("x-up-sha256").as_deref() != Some(up_expected.as_str())
            || header("x-down-sha256").as_deref() != Some(down_got.as_str())
            || body.len() != size
        {
            stats.problem(
                &stats.corrupted,
                format!("request {i} to {authority}: status {status}, head {head:?}"),
            );
            return;
        }
        Stats::add(&stats.http_requests, 1);
        (idle_since, allowed_idle) = (sent, Duration::from_secs(KEEPALIVE_SECS));
        if !connection.is_empty() {
            break;
        }
        // A keep-alive session the client did not end must stay open.
        if header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            stats.problem(
                &stats.unexpected,
                format!("request {i} to {authority}: Connection: close nobody asked for"),
            );
            return;
        }
    }
    Stats::add(&stats.http_sessions, 1);
}

/// The status of the answer to `request`, read up to the close that must follow an error;
/// `Ok(None)` if this client was [`too_late`] and got no answer.
async fn error_status(setup: &Setup, request: &str) -> Result<Option<u16>, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(setup.proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let sent = Instant::now();
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if all.is_empty() && too_late(setup, started, sent, HEADER_TIMEOUT) {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&all);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| format!("no status in {text:?}"))
}

async fn refused_client(setup: &Setup, rng: &mut Rng) {
    let port = setup.closed_port;
    let request = if rng.below(2) == 0 {
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
    } else {
        format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
    };
    Stats::add(&setup.stats.refused, 1);
    match error_status(setup, &request).await {
        Ok(Some(502) | None) => {}
        other => setup.stats.problem(
            &setup.stats.unexpected,
            format!("refused target: {other:?} for {request:?}"),
        ),
    }
}

async fn dns_failure_client(setup: &Setup, rng: &mut Rng) {
    let name = format!("fail-{}.soak.test", rng.below(1000));
    let request = if rng.below(2) == 0 {
        format!("CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n")
    } else {
        format!("GET http://{name}/ HTTP/1.1\r\nHost: {name}\r\n\r\n")
    };
    Stats::add(&setup.stats.dns_failed, 1);
    match error_status(setup, &request).await {
        Ok(Some(502) | None) => {}
        other => setup.stats.problem(
            &setup.stats.unexpected,
            format!("failing name: {other:?} for {request:?}"),
        ),
    }
}

/// Sends a head one byte every 200 ms; sluice must answer 408 (or close) once
/// `client_header_timeout` has passed. Some give up first and just go away.
async fn slowloris_client(setup: &Setup, rng: &mut Rng) {
    let stats = &setup.stats;
    Stats::add(&stats.slowloris, 1);
    // Before the connect: sluice's clock starts at its accept, later than this.
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect(setup.proxy).await else {
        stats.problem(&stats.unexpected, "cannot connect to the proxy".into());
        return;
    };
    let give_up_early = rng.below(4) == 0;
    let head = format!(
        "CONNECT {} HTTP/1.1\r\nX-Slow: {}\r\n",
        setup.exchange,
        "z".repeat(200)
    );
    let (mut r, mut w) = stream.into_split();
    let first_sent = OnceLock::new();
    let first_sent_at = &first_sent;
    if give_up_early {
        for byte in head.bytes().take(5) {
            let _ = w.write_all(&[byte]).await;
            sleep(Duration::from_millis(200)).await;
        }
        return;
    }
    let trickle = async move {
        for byte in head.bytes() {
            if w.write_all(&[byte]).await.is_err() {
                break;
            }
            first_sent_at.get_or_init(Instant::now);
            sleep(Duration::from_millis(200)).await;
        }
        // Out of head bytes, or cut off: only the answer (or the close) ends this client.
        std::future::pending::<Vec<u8>>().await
    };
    let answer = async {
        let mut all = Vec::new();
        let _ = r.read_to_end(&mut all).await;
        all
    };
    let all = tokio::select! {
        all = answer => all,
        never = trickle => never,
    };
    let text = String::from_utf8_lossy(&all);
    let elapsed = started.elapsed();
    let silent_was_right = || {
        let sent = first_sent.get().copied().unwrap_or_else(Instant::now);
        too_late(setup, started, sent, HEADER_TIMEOUT)
    };
    if text.is_empty() && !silent_was_right() {
        stats.problem(
            &stats.closed_without_408,
            format!(
                "slowloris closed after {:?} without a 408",
                started.elapsed()
            ),
        );
    }
    if !text.is_empty() && !text.starts_with("HTTP/1.1 408 ") {
        stats.problem(&stats.unexpected, format!("slowloris got {text:?}"));
    } else if elapsed < HEADER_TIMEOUT - Duration::from_millis(100) {
        stats.problem(
            &stats.unexpected,
            format!("slowloris cut off after {elapsed:?}, before client_header_timeout"),
        );
    }
}

async fn client_loop(setup: Arc<Setup>, id: u64, deadline: Instant) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0x1234_5678_9abc_def1));
    while Instant::now() < deadline {
        let choice = rng.below(100);
        let op = async {
            match choice {
                0..=34 => tunnel_client(&setup, &mut rng, TunnelMode::Normal).await,
                35..=39 => tunnel_client(&setup, &mut rng, TunnelMode::SlowReader).await,
                40..=44 => {
                    let after = rng.size(256 * 1024);
                    let rst = rng.below(2) == 0;
                    tunnel_client(&setup, &mut rng, TunnelMode::Vanish { after, rst }).await
                }
                45..=49 => tunnel_client(&setup, &mut rng, TunnelMode::OriginReset).await,
                50..=84 => http_client(&setup, &mut rng).await,
                85..=89 => refused_client(&setup, &mut rng).await,
                90..=94 => dns_failure_client(&setup, &mut rng).await,
                _ => slowloris_client(&setup, &mut rng).await,
            }
        };
        if timeout(setup.op_timeout, op).await.is_err() {
            setup.stats.problem(
                &setup.stats.hangs,
                format!(
                    "client {id}: operation {choice} not done in {:?}",
                    setup.op_timeout
                ),
            );
        }
    }
}

// ───────────────────────────── the process under test ─────────────────────────────

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// One clean exchange of each kind, to check the proxy works and to warm it up.
async fn exercise_once(setup: &Setup) {
    let mut rng = Rng(7);
    tunnel_client(setup, &mut rng, TunnelMode::Normal).await;
    let stream = open_tunnel(setup, &format!("ok-1.soak.test:{}", setup.exchange.port())).await;
    assert!(stream.is_some(), "a named CONNECT target resolves");
    http_client(setup, &mut Rng(11)).await;
    refused_client(setup, &mut rng).await;
    dns_failure_client(setup, &mut rng).await;
}

/// After a load: the origins close their idle keep-alive connections (as origins do), and
/// every descriptor sluice opened for the load should come back by itself: no more traffic
/// comes to make it notice. Returns sluice's descriptors when the load ended and once
/// settled (up to [`PATIENCE`] later: a loaded machine may take a while to close them all),
/// and its RSS.
async fn quiesce(proxy: &Proxy, closing: &AtomicBool, fds_warm: usize) -> (usize, usize, u64) {
    let pid = proxy.pid();
    let fds_at_end = open_fds(pid);
    closing.store(true, Ordering::SeqCst);
    let settle_until = Instant::now() + PATIENCE;
    let mut fds_after = open_fds(pid);
    while fds_after > fds_warm + FD_MARGIN && Instant::now() < settle_until {
        sleep(Duration::from_millis(200)).await;
        fds_after = open_fds(pid);
    }
    (fds_at_end, fds_after, rss(pid))
}

async fn soak_for(load: Duration, clients: usize, op_timeout: Duration) {
    let closing = Arc::new(AtomicBool::new(false));
    let dns = dns_server().await;
    let exchange = exchange_origin().await;
    let http = http_origin(closing.clone()).await;
    let refusing = common::ClosedPort::new();
    let closed_port = refusing.addr.port();
    let proxy = Proxy::start(&open_config(&format!(
        "    resolver {dns} ipv6=off;\n    resolver_timeout 5s;\n    \
         client_header_timeout {HEADER_TIMEOUT_SECS}s;\n    keepalive_timeout {KEEPALIVE_SECS}s;\n    \
         proxy_connect_data_timeout 30s;\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}"
    )));
    let pid = proxy.pid();
    let (fds_start, rss_start) = (open_fds(pid), rss(pid));
    let setup = Arc::new(Setup {
        proxy: proxy.addr(),
        exchange,
        http,
        closed_port,
        op_timeout,
        stats: Stats::default(),
    });

    exercise_once(&setup).await;
    sleep(Duration::from_millis(300)).await;
    let (fds_warm, rss_warm) = (open_fds(pid), rss(pid));
    assert_eq!(
        Stats::get(&setup.stats.unexpected) + Stats::get(&setup.stats.lost),
        0,
        "the warm-up failed: {:?}",
        setup.stats.problems.lock().unwrap()
    );

    // The load, in two identical halves, with a monitor sampling sluice's descriptors and
    // memory. After each half every descriptor must be back; the second half must not add to
    // the memory the first left (an allocator keeps what a peak needed, a leak keeps growing).
    let started = Instant::now();
    let peak = Arc::new(Mutex::new((0usize, 0u64)));
    let monitor = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                {
                    let mut peak = peak.lock().unwrap();
                    peak.0 = peak.0.max(open_fds(pid));
                    peak.1 = peak.1.max(rss(pid));
                }
                sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut after = Vec::new();
    for phase in 0..2u64 {
        closing.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + load / 2;
        let workers: Vec<_> = (0..clients as u64)
            .map(|id| tokio::spawn(client_loop(setup.clone(), phase << 32 | id, deadline)))
            .collect();
        for worker in workers {
            worker.await.expect("a client task panicked");
        }
        after.push(quiesce(&proxy, &closing, fds_warm).await);
    }
    monitor.abort();
    let load_time = started.elapsed();
    let (fds_at_end, fds_after, rss_first) = (after[1].0, after[1].1, after[0].2);
    let rss_after = after[1].2;

    // A fresh CONNECT still works.
    let fresh_ok_before = Stats::get(&setup.stats.tunnels);
    tunnel_client(&setup, &mut Rng(99), TunnelMode::Normal).await;
    let fresh_connect = Stats::get(&setup.stats.tunnels) == fresh_ok_before + 1;

    let s = &setup.stats;
    let (peak_fds, peak_rss) = *peak.lock().unwrap();
    let faults = Stats::get(&s.client_vanished)
        + Stats::get(&s.origin_reset)
        + Stats::get(&s.refused)
        + Stats::get(&s.dns_failed)
        + Stats::get(&s.slow_readers)
        + Stats::get(&s.slowloris);
    eprintln!(
        "soak: {clients} clients for {load_time:.1?}\n  \
         completed: {} tunnels + {} HTTP requests in {} keep-alive sessions; {} up, {} down\n  \
         faults injected: {faults} = {} clients vanished, {} origin resets, {} refused targets, \
         {} failed names, {} slow readers, {} slowloris\n  \
         corrupted {}, lost {}, hangs {}, unexpected answers {}\n  \
         origin resets seen as a plain close {}, slowloris closed without a 408 {}\n  \
         requests sent after sluice's timeout had run out (a loaded machine) {}\n  \
         slowest tunnel: {} ms\n  \
         sluice fds: {fds_start} at start, {fds_warm} warm, {peak_fds} peak, \
         {fds_at_end} as the load ended, {fds_after} settled \
         ({} after the first half)\n  \
         sluice RSS: {} at start, {} warm, {} peak, {} after the first half, {} after\n  \
         fresh CONNECT after the load: {}",
        Stats::get(&s.tunnels),
        Stats::get(&s.http_requests),
        Stats::get(&s.http_sessions),
        mib(Stats::get(&s.bytes_up)),
        mib(Stats::get(&s.bytes_down)),
        Stats::get(&s.client_vanished),
        Stats::get(&s.origin_reset),
        Stats::get(&s.refused),
        Stats::get(&s.dns_failed),
        Stats::get(&s.slow_readers),
        Stats::get(&s.slowloris),
        Stats::get(&s.corrupted),
        Stats::get(&s.lost),
        Stats::get(&s.hangs),
        Stats::get(&s.unexpected),
        Stats::get(&s.reset_as_close),
        Stats::get(&s.closed_without_408),
        Stats::get(&s.late),
        Stats::get(&s.slowest_tunnel_ms),
        after[0].1,
        mib(rss_start),
        mib(rss_warm),
        mib(peak_rss),
        mib(rss_first),
        mib(rss_after),
        if fresh_connect { "ok" } else { "FAILED" },
    );
    let problems = s.problems.lock().unwrap().clone();
    assert!(
        Stats::get(&s.corrupted) == 0
            && Stats::get(&s.lost) == 0
            && Stats::get(&s.hangs) == 0
            && Stats::get(&s.unexpected) == 0
            && Stats::get(&s.reset_as_close) == 0
            && Stats::get(&s.closed_without_408) == 0,
        "problems: {problems:#?}"
    );
    assert!(Stats::get(&s.tunnels) > 0 && Stats::get(&s.http_requests) > 0);
    for (name, counter) in [
        ("vanishing clients", &s.client_vanished),
        ("origin resets", &s.origin_reset),
        ("refused targets", &s.refused),
        ("failed names", &s.dns_failed),
        ("slow readers", &s.slow_readers),
        ("slowloris", &s.slowloris),
    ] {
        assert!(Stats::get(counter) > 0, "no {name} were injected");
    }
    for (half, &(_, fds, _)) in after.iter().enumerate() {
        assert!(
            fds <= fds_warm + FD_MARGIN,
            "sluice holds {fds} descriptors after half {half} of the load, {fds_warm} before it"
        );
    }
    assert!(
        rss_after <= rss_warm + rss_margin(clients),
        "sluice's RSS is {} after the load, {} before it",
        mib(rss_after),
        mib(rss_warm)
    );
    assert!(
        rss_after <= rss_first + RSS_GROWTH,
        "sluice's RSS grew from {} after the first half of the load to {} after the second",
        mib(rss_first),
        mib(rss_after)
    );
    assert!(fresh_connect, "a fresh CONNECT failed after the load");
    drop(proxy);
}

// ───────────────────────────── regressions ─────────────────────────────

/// Found by the soak: sluice's idle upstream pool kept connections that their origins had
/// closed (sockets in CLOSE_WAIT) until the next request to the same destination, so after a
/// burst of plain-HTTP traffic to many origins the descriptors stayed open for as long as no
/// new request came, up to 256 of them. They must be released without more traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_their_origins_closed_are_released_without_more_traffic() {
    const ORIGINS: usize = 8;
    let proxy = Proxy::start(&open_config(
        "    location / { proxy_pass http://$http_host$request_uri; }",
    ));
    let pid = proxy.pid();
    // Origins that answer one request with keep-alive, then close 100 ms later.
    let mut origins = Vec::new();
    for _ in 0..ORIGINS {
        origins.push(
            common::serve("127.0.0.1:0", |mut stream| async move {
                if common::read_request_head(&mut stream).await.is_some() {
                    let _ = stream.write_all(&common::ok(b"hello")).await;
                    sleep(Duration::from_millis(100)).await;
                }
            })
            .await,
        );
    }
    let baseline = open_fds(pid);
    for origin in &origins {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let answer = read_response(&mut stream, &mut buf, false).await;
        assert_eq!(answer.map(|a| a.0), Some(200));
    }
    // Every client connection is closed now, and every origin has closed its side.
    let give_up = Instant::now() + PATIENCE;
    let mut fds = open_fds(pid);
    while fds > baseline && Instant::now() < give_up {
        sleep(Duration::from_millis(100)).await;
        fds = open_fds(pid);
    }
    assert!(
        fds <= baseline,
        "sluice still holds {} descriptors of {ORIGINS} connections their origins closed",
        fds - baseline
    );
}
