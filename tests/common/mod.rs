//! Shared pieces of the integration tests: the real `sluice` binary started on a config, and
//! small loopback origins (echo, sink, source) that the tests dial through it.
#![allow(dead_code)] // each test file uses a different subset

pub mod certificates;
pub mod json;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running `sluice` process, stopped (by its PID) when dropped.
pub struct Proxy {
    child: Child,
    /// The bound listener addresses, in config order.
    pub addrs: Vec<SocketAddr>,
    log: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl Proxy {
    /// Starts sluice on `config`, which should `listen` on port 0; waits for its one listener.
    pub fn start(config: &str) -> Proxy {
        Proxy::start_with(config, 1)
    }

    /// Starts sluice and waits until it logs `listeners` bound addresses.
    pub fn start_with(config: &str, listeners: usize) -> Proxy {
        let dir = temp_dir();
        let path = dir.join("proxy.conf");
        std::fs::write(&path, config).unwrap();
        Proxy::spawn(&["-c", path.to_str().unwrap()], listeners, dir)
    }

    /// Starts sluice with these arguments exactly (for the embedded default).
    pub fn spawn(args: &[&str], listeners: usize, dir: PathBuf) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // The startup line: "listening on ADDR (listen in FILE:LINE)".
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some((addr, _)) = rest.split_once(" (listen in ")
                {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut addrs = Vec::new();
        while addrs.len() < listeners {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(addr) => addrs.push(addr),
                Err(_) => {
                    let _ = child.kill();
                    panic!("sluice did not start; its log:\n{}", log.lock().unwrap());
                }
            }
        }
        Proxy {
            child,
            addrs,
            log,
            dir,
        }
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The process id, to read its memory use from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to this sluice process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits up to `timeout` for the process to exit, letting the test's own servers run.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status listener's address, from the startup log.
    pub fn status_addr(&self) -> SocketAddr {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("(status_listen in "))
            .unwrap_or_else(|| panic!("no status listener in:\n{log}"));
        let after = line.split(" on ").nth(1).unwrap();
        after.split_once(' ').unwrap().0.parse().unwrap()
    }

    /// Everything sluice has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to [`PATIENCE`]) for a log line containing `needle`, and returns it.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        eventually(async || {
            let log = self.log();
            log.lines().find(|l| l.contains(needle)).map(str::to_string)
        })
        .await
        .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{}", self.log()))
    }

    /// The configuration file of a proxy made by [`Proxy::start`].
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("proxy.conf")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory for one test's files.
pub fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A directory removed when dropped, for files a test writes beside a proxy's config.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        TempDir(temp_dir())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config with one loopback listener on a free port that may CONNECT anywhere, loopback
/// destinations included (the built-in rules refuse them; the tests' origins live there).
pub fn open_config(extra: &str) -> String {
    format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8 ::1;\n{extra}\n}}\n"
    )
}

/// Starts a server on `addr` that runs `handle` for every connection.
pub async fn serve<F, Fut>(addr: &str, handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    local
}

/// An origin that reads a request head and never answers. It tells the returned receiver
/// `asked` once a head arrived, then `closed` if the proxy closes the connection within
/// `hold`, or `held` if the connection is still open when `hold` runs out.
pub async fn unanswering_origin(
    hold: Duration,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) {
    let (events, seen) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve("127.0.0.1:0", move |mut stream| {
        let events = events.clone();
        async move {
            if read_request_head(&mut stream).await.is_none() {
                return;
            }
            let _ = events.send("asked");
            let mut byte = [0u8; 1];
            let end = match tokio::time::timeout(hold, stream.read(&mut byte)).await {
                Ok(Ok(0) | Err(_)) => "closed",
                Ok(Ok(_)) => "sent more",
                Err(_) => "held",
            };
            let _ = events.send(end);
        }
    })
    .await;
    (addr, seen)
}

/// Echoes everything back; passes the client's FIN on after the last byte.
pub async fn echo_server() -> SocketAddr {
    serve("127.0.0.1:0", |mut stream| async move {
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Reads to end of stream, then answers `"<bytes> <fnv64 hash>\n"` and closes: its answer can
/// only arrive if the half-close was passed on and the other direction still flows.
pub async fn sink_server() -> SocketAddr {
    serve("127.0.0.1:0", |mut stream| async move {
        let mut hasher = Fnv::default();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => hasher.write(&buf[..n]),
                Err(_) => return,
            }
        }
        let _ = stream
            .write_all(format!("{} {:016x}\n", hasher.len, hasher.hash).as_bytes())
            .await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// Sends `len` bytes of [`pattern`] and closes.
pub async fn source_server(len: usize) -> SocketAddr {
    serve("127.0.0.1:0", move |mut stream| async move {
        let data = pattern(len, 7);
        let _ = stream.write_all(&data).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// FNV-1a, 64-bit: enough to compare streams byte for byte without holding them.
#[derive(Debug, Clone, Copy)]
pub struct Fnv {
    pub hash: u64,
    pub len: u64,
}

impl Default for Fnv {
    fn default() -> Self {
        Fnv {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
        }
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.len += bytes.len() as u64;
    }

    pub fn of(bytes: &[u8]) -> Fnv {
        let mut fnv = Fnv::default();
        fnv.write(bytes);
        fnv
    }
}

/// The exact success answer of the default configuration.
pub fn established() -> String {
    format!(
        "HTTP/1.1 200 Connection Established\r\nProxy-agent: sluice/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Sends `CONNECT target` and returns the stream positioned after the response head, with
/// the head itself.
pub async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    (stream, head)
}

/// Opens a tunnel and insists it succeeded.
pub async fn tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let (stream, head) = connect(proxy, target).await;
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "CONNECT {target} got {head:?}"
    );
    stream
}

/// Reads a response head byte by byte, so nothing after it is consumed.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads a request head byte by byte (so nothing after it is consumed), as a test origin.
/// `None` if the connection ends first.
pub async fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A whole error response: head and body, read to the close the proxy must send after it.
pub struct ErrorResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Writes raw bytes as a request and reads the whole answer up to the close.
pub async fn exchange(proxy: SocketAddr, request: &[u8]) -> ErrorResponse {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

/// Reads an answer and then insists on the close that must follow it.
pub async fn read_to_close(stream: &mut TcpStream) -> ErrorResponse {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the proxy did not close the connection");
    let text = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    ErrorResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

impl ErrorResponse {
    /// Checks what every error answer must have: Content-Length matching the body, and
    /// `Connection: close`.
    pub fn assert_well_formed(&self) {
        assert!(
            self.head.contains("\r\nConnection: close"),
            "no Connection: close in {:?}",
            self.head
        );
        let length = format!("\r\nContent-Length: {}", self.body.len());
        assert!(
            self.head.contains(&length),
            "{:?} / {:?}",
            self.head,
            self.body
        );
    }
}

/// A request as a test origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The raw head, request line and fields, up to and including the blank line.
    pub head: String,
    pub body: Vec<u8>,
    /// Which of the origin's connections it came on (0, 1, ...).
    pub connection: usize,
}

impl Recorded {
    /// The first field of this name, as the origin saw it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// An HTTP/1.1 keep-alive origin that records every request and answers with `respond`.
pub struct Origin {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Origin {
    pub async fn start<F>(respond: F) -> Origin
    where
        F: Fn(&Recorded) -> Vec<u8> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let respond = Arc::new(respond);
        let (reqs, conns) = (Arc::clone(&requests), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = conns.fetch_add(1, Ordering::SeqCst);
                let (reqs, respond) = (Arc::clone(&reqs), Arc::clone(&respond));
                tokio::spawn(async move {
                    let mut stream = stream;
                    let mut buf = Vec::new();
                    while let Some(recorded) = read_request(&mut stream, &mut buf, connection).await
                    {
                        reqs.lock().unwrap().push(recorded.clone());
                        let response = respond(&recorded);
                        if stream.write_all(&response).await.is_err() {
                            return;
                        }
                        if response
                            .windows(17)
                            .any(|w| w.eq_ignore_ascii_case(b"connection: close"))
                        {
                            return;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            requests,
            connections,
        }
    }

    /// Every request recorded so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// A `200 OK` with this body and a Content-Length.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    response.extend_from_slice(body);
    response
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            return Some(line);
        }
        fill(stream, buf).await?;
    }
}

async fn read_exact_buffered(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
) -> Option<Vec<u8>> {
    while buf.len() < n {
        fill(stream, buf).await?;
    }
    Some(buf.drain(..n).collect())
}

/// Reads one request (head and body, Content-Length or chunked) the way a strict origin would.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    connection: usize,
) -> Option<Recorded> {
    let mut head = String::new();
    loop {
        let line = read_line(stream, buf).await?;
        head.push_str(&line);
        head.push_str("\r\n");
        if line.is_empty() {
            break;
        }
    }
    let mut recorded = Recorded {
        head,
        body: Vec::new(),
        connection,
    };
    if recorded.header("transfer-encoding").is_some() {
        loop {
            let size_line = read_line(stream, buf).await?;
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                while !read_line(stream, buf).await?.is_empty() {}
                break;
            }
            let data = read_exact_buffered(stream, buf, size).await?;
            recorded.body.extend_from_slice(&data);
            read_exact_buffered(stream, buf, 2).await?;
        }
    } else if let Some(length) = recorded.header("content-length") {
        let length: usize = length.parse().ok()?;
        recorded.body = read_exact_buffered(stream, buf, length).await?;
    }
    Some(recorded)
}

/// Reads one HTTP/1.1 response from a client connection: status, head, and a body framed by
/// Content-Length or chunked (decoded; none if `no_body`, as after HEAD). For keep-alive use.
pub async fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    no_body: bool,
) -> Option<(u16, String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let line = read_line(stream, buf).await?;
        head.push_str(&line);
        head.push_str("\r\n");
        if line.is_empty() {
            break;
        }
    }
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let recorded = Recorded {
        head: head.clone(),
        body: Vec::new(),
        connection: 0,
    };
    let mut body = Vec::new();
    if no_body || status == 204 || status == 304 {
        return Some((status, head, body));
    }
    if recorded.header("transfer-encoding").is_some() {
        loop {
            let size = usize::from_str_radix(read_line(stream, buf).await?.trim(), 16).ok()?;
            if size == 0 {
                read_line(stream, buf).await?;
                break;
            }
            body.extend(read_exact_buffered(stream, buf, size).await?);
            read_exact_buffered(stream, buf, 2).await?;
        }
    } else if let Some(length) = recorded.header("content-length") {
        body = read_exact_buffered(stream, buf, length.parse().ok()?).await?;
    }
    Some((status, head, body))
}

/// The `server` block of a real nginx + proxy_connect deployment, as people paste it.
pub const NGINX_SEED_BLOCK: &str = "\
server {
    listen 10101 default_server;
    resolver 8.8.8.8;
    resolver_timeout 3s;
    proxy_connect;
    root /data/www;
    index index.html;
    location / {
        proxy_pass http://$http_host$request_uri;
        proxy_set_header Host $http_host;
    }
}
";

/// A `Proxy-Authorization` value for `user` and `password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let credentials = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// Whether `program` is on `PATH`. Under `CI=true` a missing tool fails the test, so the suite
/// never passes by skipping what it was meant to check; elsewhere the skip is printed.
pub fn require_tool(program: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    });
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is not installed, and CI=true requires every tool the tests use"
        );
        eprintln!("SKIPPED: {program} is not installed (CI=true would fail this test)");
    }
    found
}

/// Sends SIGHUP and waits until sluice has logged the outcome; returns that log line.
pub async fn sighup(proxy: &Proxy) -> String {
    let outcomes = |log: &str| {
        log.lines()
            .filter(|l| l.contains("reloaded ") || l.contains("reload failed"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = outcomes(&proxy.log()).len();
    proxy.signal(libc::SIGHUP);
    eventually(async || outcomes(&proxy.log()).get(before).cloned())
        .await
        .unwrap_or_else(|| panic!("no reload outcome logged:\n{}", proxy.log()))
}

/// How long a test waits for what the proxy does on its own time (a counter, a log line, a
/// closed descriptor): long, since a loaded two-core CI machine may take seconds, and spent
/// only when the awaited thing never comes.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How late a timeout may fire on a loaded machine and still count as on time: short of every
/// default timeout (30 s and up), so a test still tells a configured timeout from a default one.
pub const LATENESS: Duration = Duration::from_secs(5);

/// Asks `probe` every 20 ms until it has an answer, for up to [`PATIENCE`]; `None` if it never
/// had one. The one home of "wait for the server to catch up": what a server records after
/// the client has seen the effect (a metric, a log line) is read through this, never after a
/// fixed sleep.
pub async fn eventually<T>(mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(answer) = probe().await {
            return Some(answer);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port that refuses connections (RST) for as long as this lives: bound, so no
/// other test can take the number, but not listening. Dropping a listener to get a "closed"
/// port would leave the number free for the next test's listener to take.
pub struct ClosedPort {
    _socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        ClosedPort {
            _socket: socket,
            addr,
        }
    }
}
