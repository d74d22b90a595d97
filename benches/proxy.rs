//! The proxy benchmark: sluice against the same loads sent straight to the origin.
//!
//! ```text
//! cargo bench --bench proxy                                  # 5 s loads, 1 repeat, 5000 idle tunnels
//! cargo bench --bench proxy -- --seconds 2 --idle 1000       # a quick look
//! cargo bench --bench proxy -- --only t1,t16 --repeat 3      # some figures, median of 3 runs
//! ```
//!
//! It starts the `sluice` binary of this build (release settings) on a loopback config and four
//! loopback origins in this process: `sink` (discards), `source` (streams zeros once the client
//! has sent a byte, as a TLS server answers a ClientHello), `echo`, and a keep-alive HTTP/1.1
//! origin with a 1 KiB body. Each load runs through sluice and then *direct* (no proxy, the same
//! client and origin): the direct figure is the physical limit of this machine, where client,
//! origin and proxy share the cores, and the table gives sluice's figure as a ratio of it.
//! The machine may be shared: compare ratios within one run, not figures across runs.
//!
//! sluice also listens with TLS (`listen ... ssl`, a certificate made by the `openssl` CLI):
//! the `tls` figure runs the tunnel loads (`t1`, `t16`, `setup`, the TLS handshake included)
//! through it too, and a second table gives them beside the plain listener's.
//!
//! Origins and load generator run on two separate tokio runtimes in this process; sluice runs in
//! its own process, restarted before each repeat so that memory is always measured on a fresh one.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout_at;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Writes of this size carry the throughput loads.
const WRITE: usize = 128 * 1024;
static ZEROS: [u8; WRITE] = [0; WRITE];
/// Reads of the throughput client and of the sink.
const READ: usize = 256 * 1024;
/// Bytes moved before the measured window opens.
const WARMUP: Duration = Duration::from_millis(500);
/// Concurrent clients of the setup-rate and HTTP loads.
const CONCURRENCY: usize = 32;
/// Tunnels being opened at once while building up the idle set.
const IDLE_SETUP_CONCURRENCY: usize = 64;
/// The body the HTTP origin sends.
const BODY: usize = 1024;
/// How long one operation of a rate load may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str =
    "cargo bench --bench proxy -- [--seconds S] [--repeat R] [--idle N] [--only LIST]
  --seconds S   length of each timed load (default 5)
  --repeat R    runs of the whole matrix, medians printed (default 1)
  --idle N      tunnels held for the memory figure (default 5000)
  --only LIST   comma-separated subset of: start,idle,setup,t1,t16,http,tls
                (tls: the setup, t1 and t16 loads also through the TLS listener)";

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(&options) {
        eprintln!("proxy bench: {error}");
        std::process::exit(1);
    }
}

struct Options {
    seconds: f64,
    repeat: usize,
    idle: usize,
    only: Vec<String>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Res<Options> {
        let mut options = Options {
            seconds: 5.0,
            repeat: 1,
            idle: 5000,
            only: ["start", "idle", "setup", "t1", "t16", "http", "tls"]
                .map(String::from)
                .to_vec(),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                // `cargo bench` passes --bench to every bench binary.
                "--bench" => {}
                "--seconds" => options.seconds = value()?.parse()?,
                "--repeat" => options.repeat = value()?.parse::<usize>()?.max(1),
                "--idle" => options.idle = value()?.parse()?,
                "--only" => options.only = value()?.split(',').map(String::from).collect(),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        Ok(options)
    }

    fn wants(&self, figure: &str) -> bool {
        self.only.iter().any(|f| f == figure)
    }
}

fn run(options: &Options) -> Res<()> {
    let idle = options.idle.min(open_file_room()?);
    // Origins and load on separate runtimes, two threads each: one per core of the target machine.
    let origin_rt = runtime("origin")?;
    let load_rt = runtime("load")?;
    let origins = origin_rt.block_on(Origins::start())?;
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let mut table = Table::default();
    table.set(
        Row::BinaryMib,
        Side::Sluice,
        std::fs::metadata(&binary)?.len() as f64 / MIB,
    );
    for repeat in 0..options.repeat {
        let proxy = Sluice::start(&binary, &dir)?;
        eprintln!(
            "repeat {}: sluice pid {} on {}, accepting {:.1} ms after start",
            repeat + 1,
            proxy.pid(),
            proxy.addr,
            proxy.start_ms
        );
        if options.wants("start") {
            table.add(Row::StartMs, Side::Sluice, proxy.start_ms);
            table.add(
                Row::IdleRssMib,
                Side::Sluice,
                proxy.rss_kib()? as f64 / 1024.0,
            );
        }
        // Alternate which side goes first, so that neither always runs on a warmer machine.
        let mut sides = vec![Side::Sluice, Side::Direct];
        if options.wants("tls") {
            match proxy.tls_addr {
                Some(_) => sides.insert(1, Side::SluiceTls),
                None => eprintln!("  tls: skipped (openssl could not make a certificate)"),
            }
        }
        if repeat % 2 == 1 {
            sides.reverse();
        }
        let route = |side: Side| match side {
            Side::Sluice => Route::Proxy(proxy.addr),
            Side::SluiceTls => Route::ProxyTls(proxy.tls_addr.expect("a TLS listener")),
            Side::Direct => Route::Direct,
        };
        if options.wants("idle") && idle > 0 {
            let before = proxy.rss_kib()?;
            let (held, errors) =
                load_rt.block_on(idle_tunnels(route(Side::Sluice), origins.echo, idle));
            // Let the proxy settle, then take the highest of a few samples.
            std::thread::sleep(Duration::from_secs(1));
            let mut holding = 0;
            for _ in 0..3 {
                holding = holding.max(proxy.rss_kib()?);
                std::thread::sleep(Duration::from_millis(300));
            }
            let alive = load_rt.block_on(prove_all(held));
            table.errors += errors + (idle as u64).saturating_sub(alive as u64 + errors);
            table.add(
                Row::IdleKib,
                Side::Sluice,
                (holding.saturating_sub(before)) as f64 / idle as f64,
            );
            table.add(Row::HoldingRssMib, Side::Sluice, holding as f64 / 1024.0);
            eprintln!(
                "  idle: {alive} of {idle} tunnels alive after the hold, RSS {before} -> {holding} KiB"
            );
        }
        for &side in &sides {
            if !options.wants("setup") {
                break;
            }
            let rate = load_rt.block_on(setup_rate(route(side), origins.echo, options.seconds));
            if side == Side::SluiceTls {
                table.tls_setups += 1;
            }
            eprintln!("  setup {side:?}: {rate:?}");
            table.errors += rate.errors;
            table.add(Row::SetupRate, side, rate.per_second);
            table.add(Row::SetupP50, side, rate.p50);
            table.add(Row::SetupP99, side, rate.p99);
        }
        for (figure, conns) in [("t1", 1), ("t16", 16)] {
            if !options.wants(figure) {
                continue;
            }
            for (direction, target) in [
                (Direction::Up, origins.sink),
                (Direction::Down, origins.source),
            ] {
                for &side in &sides {
                    let pid = (side != Side::Direct).then(|| proxy.pid());
                    let moved = load_rt.block_on(throughput(
                        route(side),
                        target,
                        conns,
                        direction,
                        options.seconds,
                        pid,
                    ));
                    eprintln!("  {conns} × {direction:?} {side:?}: {moved:?}");
                    table.errors += moved.failed;
                    table.add(Row::throughput(conns, direction), side, moved.gbps);
                    if let (Some(cpu), 1) = (moved.cpu_ms_per_gib, conns) {
                        let row = match direction {
                            Direction::Up => Row::CpuUp1,
                            Direction::Down => Row::CpuDown1,
                        };
                        table.add(row, side, cpu);
                    }
                }
            }
        }
        for &side in &sides {
            if !options.wants("http") {
                break;
            }
            if side == Side::SluiceTls {
                continue; // the TLS listener's figures are the tunnel loads
            }
            let rate = load_rt.block_on(http_rate(route(side), origins.http, options.seconds));
            eprintln!("  http {side:?}: {rate:?}");
            table.errors += rate.errors;
            table.add(Row::HttpRate, side, rate.per_second);
            table.add(Row::HttpP50, side, rate.p50);
            table.add(Row::HttpP99, side, rate.p99);
        }
        drop(proxy);
    }
    let _ = std::fs::remove_dir_all(&dir);
    print_report(options, idle, &table);
    load_rt.shutdown_background();
    origin_rt.shutdown_background();
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

fn runtime(name: &str) -> io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Raises this process's open-file limit to its hard limit and returns how many idle tunnels
/// fit: each costs the client and the echo origin one descriptor each (sluice raises its own).
fn open_file_room() -> io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((limit.rlim_cur as usize).saturating_sub(500) / 2)
}

// ---- sluice ------------------------------------------------------------------------------

/// A sluice process, killed (by its own PID) when dropped.
struct Sluice {
    child: Child,
    addr: SocketAddr,
    /// The TLS listener, when a certificate could be made for it.
    tls_addr: Option<SocketAddr>,
    /// From `spawn` to the first accepted TCP connection.
    start_ms: f64,
}

impl Sluice {
    fn start(binary: &PathBuf, dir: &std::path::Path) -> Res<Sluice> {
        let addr = free_port()?;
        let tls_addr = match tls_certificate(dir) {
            Ok(()) => Some(free_port()?),
            Err(error) => {
                eprintln!("no TLS listener: {error}");
                None
            }
        };
        let tls = match tls_addr {
            Some(tls_addr) => format!(
                "\x20   listen {tls_addr} ssl;\n\
                 \x20   ssl_certificate {0}/server.pem;\n\
                 \x20   ssl_certificate_key {0}/server.key;\n",
                dir.display()
            ),
            None => String::new(),
        };
        let config = dir.join("bench.conf");
        std::fs::write(
            &config,
            format!(
                "# written by benches/proxy.rs: loopback origins only\n\
                 server {{\n\
                 \x20   listen {addr};\n\
                 {tls}\
                 \x20   resolver 127.0.0.1;\n\
                 \x20   proxy_connect;\n\
                 \x20   proxy_connect_allow all;\n\
                 \x20   destination_allow 127.0.0.0/8 ::1;\n\
                 \x20   location / {{\n\
                 \x20       proxy_pass http://$http_host$request_uri;\n\
                 \x20   }}\n\
                 }}\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("sluice.log"))?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("sluice.log")).unwrap_or_default();
                return Err(format!("sluice exited ({status}):\n{log}").into());
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("sluice did not accept within 10 s".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let start_ms = started.elapsed().as_secs_f64() * 1e3;
        // The probe connection is gone; let the process settle before its memory is read.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Sluice {
            child,
            addr,
            tls_addr,
            start_ms,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size, KiB.
    fn rss_kib(&self) -> Res<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or("no VmRSS in /proc/PID/status")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("bad VmRSS line")?
            .parse()?)
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `ca.pem`, and `server.pem` + `server.key` for localhost and 127.0.0.1 in `dir` with
/// the `openssl` CLI, and the client configuration that trusts the CA.
fn tls_certificate(dir: &std::path::Path) -> Res<()> {
    if TLS_CLIENT.get().is_some() {
        return Ok(()); // made for the first repeat, kept for the others
    }
    let openssl = |args: &[&str]| -> Res<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=bench CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "1",
        "-days",
        "1",
        "-out",
        "server.pem",
        "-extfile",
        "server.ext",
    ])?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(
        dir.join("ca.pem"),
    )?)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let _ = TLS_CLIENT.set(tokio_rustls::TlsConnector::from(Arc::new(config)));
    Ok(())
}

/// The load's TLS client, trusting the bench CA.
static TLS_CLIENT: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();

/// A loopback address with a port nobody is listening on right now.
fn free_port() -> io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

// ---- origins -----------------------------------------------------------------------------

struct Origins {
    sink: SocketAddr,
    source: SocketAddr,
    echo: SocketAddr,
    http: SocketAddr,
}

#[derive(Clone, Copy)]
enum Role {
    Sink,
    Source,
    Echo,
    Http,
}

impl Origins {
    /// Binds the four origins; must run on the runtime that will serve them.
    async fn start() -> Res<Origins> {
        Ok(Origins {
            sink: origin(Role::Sink)?,
            source: origin(Role::Source)?,
            echo: origin(Role::Echo)?,
            http: origin(Role::Http)?,
        })
    }
}

fn origin(role: Role) -> io::Result<SocketAddr> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind("127.0.0.1:0".parse().expect("an address"))?;
    let listener: TcpListener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, most likely: back off and keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            // A client that resets or goes away ends its connection; nothing more to do.
            tokio::spawn(async move {
                let _ = serve(stream, role).await;
            });
        }
    });
    Ok(addr)
}

async fn serve(mut stream: TcpStream, role: Role) -> io::Result<()> {
    match role {
        Role::Sink => discard(&mut stream).await,
        Role::Echo => {
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                stream.write_all(&buf[..n]).await?;
            }
        }
        Role::Source => {
            let mut first = [0; 1];
            if stream.read(&mut first).await? == 0 {
                return Ok(());
            }
            let (mut reader, mut writer) = stream.split();
            let stream_zeros = async {
                loop {
                    writer.write_all(&ZEROS).await?;
                }
            };
            tokio::select! {
                result = stream_zeros => result,
                result = discard(&mut reader) => result,
            }
        }
        Role::Http => http_origin(stream).await,
    }
}

async fn discard(reader: &mut (impl AsyncReadExt + Unpin)) -> io::Result<()> {
    let mut buf = vec![0; READ];
    while reader.read(&mut buf).await? > 0 {}
    Ok(())
}

/// Answers every request head with a 1 KiB body, keeping the connection open.
async fn http_origin(mut stream: TcpStream) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY}\r\n\r\n"
    )
    .into_bytes();
    response.resize(response.len() + BODY, b'x');
    let mut buf = vec![0; 16 * 1024];
    let mut have = 0;
    let mut out = Vec::new();
    loop {
        if have == buf.len() {
            return Err(io::Error::other("request head over 16 KiB"));
        }
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        let mut used = 0;
        while let Some(end) = find(&buf[used..have], b"\r\n\r\n") {
            out.extend_from_slice(&response);
            used += end + 4;
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        buf.copy_within(used..have, 0);
        have -= used;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---- loads -------------------------------------------------------------------------------

/// Where a load's connections go.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Straight to the origin.
    Direct,
    /// Through the proxy at this address (a CONNECT tunnel, or an absolute-form request).
    Proxy(SocketAddr),
    /// Through the proxy's TLS listener at this address (a CONNECT tunnel inside TLS).
    ProxyTls(SocketAddr),
}

/// A load's connection: a socket, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

/// A connection to `target`: direct, or a tunnel opened with CONNECT (over TLS to a TLS
/// listener, the handshake included).
async fn open(route: Route, target: SocketAddr) -> io::Result<Stream> {
    let (proxy, tls) = match route {
        Route::Direct => {
            let stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            return Ok(Box::new(stream));
        }
        Route::Proxy(proxy) => (proxy, false),
        Route::ProxyTls(proxy) => (proxy, true),
    };
    let socket = TcpStream::connect(proxy).await?;
    socket.set_nodelay(true)?;
    if !tls {
        let mut stream = socket;
        ask_tunnel(&mut stream, target).await?;
        return Ok(Box::new(stream));
    }
    let connector = TLS_CLIENT.get().expect("a TLS client with a TLS listener");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    // rustls reads 4 KiB at a time: a buffer under it spares the client a system call per
    // read, as TLS libraries that read whole records do.
    let socket = tokio::io::BufReader::with_capacity(READ, socket);
    let mut stream = connector.connect(name, socket).await?;
    ask_tunnel(&mut stream, target).await?;
    Ok(Box::new(stream))
}

/// Sends `CONNECT target` and reads the proxy's `200`.
async fn ask_tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: SocketAddr,
) -> io::Result<()> {
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0; 1024];
    let mut have = 0;
    loop {
        let n = stream.read(&mut head[have..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed before the end of its answer",
            ));
        }
        have += n;
        if let Some(end) = find(&head[..have], b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                let line = String::from_utf8_lossy(
                    head[..end].split(|&b| b == b'\r').next().unwrap_or(b""),
                );
                return Err(io::Error::other(format!("CONNECT answered `{line}`")));
            }
            if end + 4 != have {
                return Err(io::Error::other("bytes after the CONNECT answer"));
            }
            return Ok(());
        }
        if have == head.len() {
            return Err(io::Error::other("CONNECT answer over 1 KiB"));
        }
    }
}

/// One byte written and echoed back.
async fn ping(stream: &mut Stream) -> io::Result<()> {
    stream.write_all(b"p").await?;
    let mut byte = [0; 1];
    stream.read_exact(&mut byte).await?;
    if &byte != b"p" {
        return Err(io::Error::other("the echo sent another byte"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Direction {
    /// Client → sink.
    Up,
    /// Source → client.
    Down,
}

#[derive(Debug)]
struct Moved {
    gbps: f64,
    /// The proxy's CPU time (user + system) per GiB carried in the window, when measured.
    cpu_ms_per_gib: Option<f64>,
    /// Tunnels that failed or moved nothing in the window.
    failed: u64,
}

/// `conns` connections carrying back-to-back 128 KiB writes; aggregate Gbit/s counted at the
/// client over `seconds`, after a warm-up.
async fn throughput(
    route: Route,
    target: SocketAddr,
    conns: usize,
    direction: Direction,
    seconds: f64,
    proxy_pid: Option<u32>,
) -> Moved {
    let mut opening = JoinSet::new();
    for _ in 0..conns {
        opening.spawn(open(route, target));
    }
    let mut failed = 0;
    let mut counters = Vec::new();
    let mut pumps = JoinSet::new();
    while let Some(opened) = opening.join_next().await {
        let Ok(Ok(mut stream)) = opened else {
            failed += 1;
            continue;
        };
        let moved = Arc::new(AtomicU64::new(0));
        counters.push(Arc::clone(&moved));
        pumps.spawn(async move {
            match direction {
                Direction::Up => loop {
                    let n = stream.write(&ZEROS).await?;
                    moved.fetch_add(n as u64, Relaxed);
                },
                Direction::Down => {
                    stream.write_all(b"g").await?;
                    let mut buf = vec![0; READ];
                    loop {
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<(), io::Error>(());
                        }
                        moved.fetch_add(n as u64, Relaxed);
                    }
                }
            }
        });
    }
    let read_all = || {
        counters
            .iter()
            .map(|c| c.load(Relaxed))
            .collect::<Vec<u64>>()
    };
    tokio::time::sleep(WARMUP).await;
    let cpu_before = proxy_pid.and_then(cpu_ms);
    let (before, started) = (read_all(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (after, elapsed) = (read_all(), started.elapsed().as_secs_f64());
    let cpu_after = proxy_pid.and_then(cpu_ms);
    pumps.abort_all();
    let stalled = before.iter().zip(&after).filter(|(b, a)| b == a).count() as u64;
    let bytes: u64 = after.iter().sum::<u64>() - before.iter().sum::<u64>();
    let cpu_ms_per_gib = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if bytes > 0 => Some((a - b) / (bytes as f64 / (MIB * 1024.0))),
        _ => None,
    };
    Moved {
        gbps: bytes as f64 * 8.0 / elapsed / 1e9,
        cpu_ms_per_gib,
        failed: failed + stalled,
    }
}

/// The CPU time (user + system, ms) process `pid` has used, from /proc/PID/stat.
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1000.0 / per_second)
}

#[derive(Debug)]
struct Rate {
    per_second: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

impl Rate {
    fn from(mut micros: Vec<u32>, errors: u64, elapsed: f64) -> Rate {
        micros.sort_unstable();
        let percentile = |p: f64| {
            if micros.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * micros.len() as f64).ceil() as usize;
            f64::from(micros[rank.clamp(1, micros.len()) - 1])
        };
        Rate {
            per_second: micros.len() as f64 / elapsed,
            p50: percentile(50.0),
            p99: percentile(99.0),
            errors,
        }
    }
}

/// Runs `worker` on `CONCURRENCY` tasks until `seconds` have passed; each returns its latencies
/// (µs) and error count. An operation still running at the deadline is not counted.
async fn rate_load<F, Fut>(seconds: f64, worker: F) -> Rate
where
    F: Fn(tokio::time::Instant) -> Fut,
    Fut: Future<Output = (Vec<u32>, u64)> + Send + 'static,
{
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = JoinSet::new();
    for _ in 0..CONCURRENCY {
        workers.spawn(worker(deadline));
    }
    let (mut micros, mut errors) = (Vec::new(), 0);
    while let Some(done) = workers.join_next().await {
        let (m, e) = done.unwrap_or_default();
        micros.extend(m);
        errors += e;
    }
    Rate::from(micros, errors, started.elapsed().as_secs_f64())
}

/// Each worker loops: connect, CONNECT, 200, one byte echoed, close.
async fn setup_rate(route: Route, echo: SocketAddr, seconds: f64) -> Rate {
    rate_load(seconds, move |deadline| async move {
        let (mut micros, mut errors) = (Vec::new(), 0);
        loop {
            let started = Instant::now();
            let cycle = async {
                let mut stream = open(route, echo).await?;
                ping(&mut stream).await
            };
            match timeout_at(deadline, tokio::time::timeout(OP_TIMEOUT, cycle)).await {
                Err(_deadline) => break,
                Ok(Ok(Ok(()))) => micros.push(micros_since(started)),
                Ok(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        (micros, errors)
    })
    .await
}

/// Each worker keeps one connection and sends `GET /1k` on it, one request at a time: in
/// absolute form through the proxy, in origin form direct.
async fn http_rate(route: Route, origin: SocketAddr, seconds: f64) -> Rate {
    let (dial, target) = match route {
        Route::Direct => (origin, "/1k".to_string()),
        Route::Proxy(proxy) | Route::ProxyTls(proxy) => (proxy, format!("http://{origin}/1k")),
    };
    let request: Arc<[u8]> =
        format!("GET {target} HTTP/1.1\r\nHost: {origin}\r\nAccept: */*\r\n\r\n")
            .into_bytes()
            .into();
    rate_load(seconds, move |deadline| {
        let request = Arc::clone(&request);
        async move {
            let (mut micros, mut errors) = (Vec::new(), 0);
            let mut client: Option<HttpClient> = None;
            loop {
                let started = Instant::now();
                let exchange = async {
                    if client.is_none() {
                        client = Some(HttpClient::connect(dial).await?);
                    }
                    let c = client.as_mut().expect("connected just above");
                    c.get(&request).await
                };
                match timeout_at(deadline, tokio::time::timeout(OP_TIMEOUT, exchange)).await {
                    Err(_deadline) => break,
                    Ok(Ok(Ok(keep))) => {
                        micros.push(micros_since(started));
                        if !keep {
                            client = None;
                        }
                    }
                    Ok(_) => {
                        errors += 1;
                        client = None;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (micros, errors)
        }
    })
    .await
}

/// A keep-alive HTTP/1.1 client connection that reads `Content-Length` answers.
struct HttpClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// `buf[start..end]` was read and not yet used.
    start: usize,
    end: usize,
}

impl HttpClient {
    async fn connect(addr: SocketAddr) -> io::Result<HttpClient> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            stream,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        })
    }

    /// Sends `request` and reads the whole 2xx answer; true if the connection may be kept.
    async fn get(&mut self, request: &[u8]) -> io::Result<bool> {
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(end) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                break self.start + end + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[self.start..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 2") && !head.starts_with("http/1.0 2") {
            let line = head.lines().next().unwrap_or("").to_string();
            return Err(io::Error::other(format!("answer `{line}`")));
        }
        let mut length = None;
        let mut keep = head.starts_with("http/1.1");
        for line in head.lines().skip(1) {
            if let Some(value) = line.strip_prefix("content-length:") {
                length = value.trim().parse::<usize>().ok();
            } else if let Some(value) = line.strip_prefix("connection:") {
                keep = !value.contains("close");
            }
        }
        let length = length.ok_or_else(|| io::Error::other("answer without Content-Length"))?;
        self.start = head_end;
        let mut left = length;
        loop {
            let take = left.min(self.end - self.start);
            self.start += take;
            left -= take;
            if left == 0 {
                return Ok(keep);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            return Err(io::Error::other("answer head over 64 KiB"));
        }
        match self.stream.read(&mut self.buf[self.end..]).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }
}

/// Opens `n` tunnels to the echo origin, each proven with one echoed byte, and returns them
/// with the number that failed.
async fn idle_tunnels(route: Route, echo: SocketAddr, n: usize) -> (Vec<Stream>, u64) {
    let permits = Arc::new(Semaphore::new(IDLE_SETUP_CONCURRENCY));
    let mut opening = JoinSet::new();
    for _ in 0..n {
        let permits = Arc::clone(&permits);
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(io::Error::other)?;
            let mut stream = tokio::time::timeout(OP_TIMEOUT, open(route, echo))
                .await
                .map_err(io::Error::other)??;
            tokio::time::timeout(OP_TIMEOUT, ping(&mut stream))
                .await
                .map_err(io::Error::other)??;
            Ok::<Stream, io::Error>(stream)
        });
    }
    let (mut held, mut errors) = (Vec::with_capacity(n), 0);
    while let Some(opened) = opening.join_next().await {
        match opened {
            Ok(Ok(stream)) => held.push(stream),
            _ => errors += 1,
        }
    }
    (held, errors)
}

/// Proves every tunnel again after the hold; returns how many still echo.
async fn prove_all(held: Vec<Stream>) -> usize {
    let permits = Arc::new(Semaphore::new(IDLE_SETUP_CONCURRENCY));
    let mut proving = JoinSet::new();
    for mut stream in held {
        let permits = Arc::clone(&permits);
        proving.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            tokio::time::timeout(OP_TIMEOUT, ping(&mut stream))
                .await
                .ok()?
                .ok()
        });
    }
    let mut alive = 0;
    while let Some(proved) = proving.join_next().await {
        alive += usize::from(matches!(proved, Ok(Some(()))));
    }
    alive
}

fn micros_since(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)
}

// ---- the report --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Sluice,
    /// sluice's TLS listener.
    SluiceTls,
    Direct,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Row {
    Up1,
    Down1,
    Up16,
    Down16,
    CpuUp1,
    CpuDown1,
    SetupRate,
    SetupP50,
    SetupP99,
    IdleKib,
    HttpRate,
    HttpP50,
    HttpP99,
    IdleRssMib,
    HoldingRssMib,
    BinaryMib,
    StartMs,
}

impl Row {
    const ALL: [Row; 17] = [
        Row::Up1,
        Row::Down1,
        Row::Up16,
        Row::Down16,
        Row::CpuUp1,
        Row::CpuDown1,
        Row::SetupRate,
        Row::SetupP50,
        Row::SetupP99,
        Row::IdleKib,
        Row::HttpRate,
        Row::HttpP50,
        Row::HttpP99,
        Row::IdleRssMib,
        Row::HoldingRssMib,
        Row::BinaryMib,
        Row::StartMs,
    ];

    fn throughput(conns: usize, direction: Direction) -> Row {
        match (conns, direction) {
            (1, Direction::Up) => Row::Up1,
            (1, Direction::Down) => Row::Down1,
            (_, Direction::Up) => Row::Up16,
            (_, Direction::Down) => Row::Down16,
        }
    }

    /// The label, with ↑ where higher is better and ↓ where lower is.
    fn label(self, idle: usize) -> String {
        match self {
            Row::Up1 => "tunnel throughput, 1 stream up, Gbit/s ↑".into(),
            Row::Down1 => "tunnel throughput, 1 stream down, Gbit/s ↑".into(),
            Row::Up16 => "tunnel throughput, 16 streams up, Gbit/s ↑".into(),
            Row::Down16 => "tunnel throughput, 16 streams down, Gbit/s ↑".into(),
            Row::CpuUp1 => "proxy CPU per GiB carried, 1 stream up, ms ↓".into(),
            Row::CpuDown1 => "proxy CPU per GiB carried, 1 stream down, ms ↓".into(),
            Row::SetupRate => "tunnel setup, 32 concurrent, tunnels/s ↑".into(),
            Row::SetupP50 => "tunnel setup latency p50, µs ↓".into(),
            Row::SetupP99 => "tunnel setup latency p99, µs ↓".into(),
            Row::IdleKib => format!("memory per idle tunnel ({idle} held), KiB ↓"),
            Row::HttpRate => "plain-HTTP forwarding, 32 keep-alive clients, req/s ↑".into(),
            Row::HttpP50 => "plain-HTTP latency p50, µs ↓".into(),
            Row::HttpP99 => "plain-HTTP latency p99, µs ↓".into(),
            Row::IdleRssMib => "idle process RSS, MiB ↓".into(),
            Row::HoldingRssMib => format!("process RSS holding {idle} tunnels, MiB ↓"),
            Row::BinaryMib => "binary size, MiB ↓".into(),
            Row::StartMs => "start to accepting, ms ↓".into(),
        }
    }
}

#[derive(Default)]
struct Table {
    /// (row, side) → one value per repeat.
    cells: std::collections::BTreeMap<(Row, Side), Vec<f64>>,
    errors: u64,
    /// Setup loads run through the TLS listener.
    tls_setups: usize,
}

impl Table {
    fn key(row: Row, side: Side) -> (Row, Side) {
        (row, side)
    }

    fn add(&mut self, row: Row, side: Side, value: f64) {
        self.cells
            .entry(Table::key(row, side))
            .or_default()
            .push(value);
    }

    fn set(&mut self, row: Row, side: Side, value: f64) {
        self.cells.insert(Table::key(row, side), vec![value]);
    }

    fn median(&self, row: Row, side: Side) -> Option<f64> {
        let mut values = self.cells.get(&Table::key(row, side))?.clone();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        Some(if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        })
    }
}

/// The TLS listener's figures beside the plain listener's, measured in the same run.
fn print_tls_report(table: &Table) {
    let rows = [
        Row::Up1,
        Row::Down1,
        Row::Up16,
        Row::Down16,
        Row::CpuUp1,
        Row::CpuDown1,
        Row::SetupRate,
        Row::SetupP50,
        Row::SetupP99,
    ];
    if rows
        .iter()
        .all(|&row| table.median(row, Side::SluiceTls).is_none())
    {
        return;
    }
    println!();
    println!(
        "The TLS listener (listen ... ssl; TLS 1.3, the handshake in every setup; {} setup run(s)):",
        table.tls_setups
    );
    println!();
    println!("| figure | TLS listener | plain listener | TLS / plain |");
    println!("| --- | ---: | ---: | ---: |");
    for row in rows {
        let (Some(tls), Some(plain)) = (
            table.median(row, Side::SluiceTls),
            table.median(row, Side::Sluice),
        ) else {
            continue;
        };
        let shown = |v: f64| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        println!(
            "| {} | {} | {} | {:.2}× |",
            row.label(0),
            shown(tls),
            shown(plain),
            tls / plain
        );
    }
}

fn print_report(options: &Options, idle: usize, table: &Table) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "sluice benchmark: {cores} cores, loopback, {} s per load, median of {} run(s); \
         sluice / direct is the share of this machine's limit that sluice reaches \
         (for ↓ rows, lower is better).",
        options.seconds, options.repeat
    );
    println!();
    println!("| figure | sluice | direct (no proxy) | sluice / direct |");
    println!("| --- | ---: | ---: | ---: |");
    for row in Row::ALL {
        let Some(sluice) = table.median(row, Side::Sluice) else {
            continue;
        };
        let direct = table.median(row, Side::Direct);
        let shown = |v: f64| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        println!(
            "| {} | {} | {} | {} |",
            row.label(idle),
            shown(sluice),
            direct.map_or("–".into(), shown),
            direct.map_or("–".into(), |d| format!("{:.2}×", sluice / d)),
        );
    }
    print_tls_report(table);
    println!();
    println!(
        "errors (failed or stalled tunnels, failed requests): {}",
        table.errors
    );
}
