//! Bandwidth limits and per-user policy through the real binary over loopback: rates are
//! measured as bytes over the elapsed time of a bounded window and held to a tolerance;
//! `users` blocks give different reach to different users; `destination_mode report` serves
//! what a rule would deny and says so in the log and the metrics.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a rate may differ from its limit by, measured over a window.
const TOLERANCE: f64 = 0.10;
/// The window for a single download.
const WINDOW: Duration = Duration::from_secs(5);

/// The least each of two connections sharing a budget must get, as a part of the limit: 60 % of
/// an even half. The split follows which worker the kernel runs more, so it is not exactly
/// even on a loaded machine; a starved connection still fails.
const FAIR_SHARE: f64 = 0.30;

/// Rate measurements run one at a time: two at once share the two cores, and each then
/// measures the other's scheduling as much as sluice's limits.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a download is read before its rate is measured: what the kernel's buffers took
/// in while the test was busy elsewhere (opening the next tunnel) is read off first.
const WARM_UP: Duration = Duration::from_millis(500);

/// Reads from `stream` for [`WARM_UP`], then for `window`: the bytes read in the window over
/// the time they took, in bytes per second.
async fn rate_over(stream: &mut TcpStream, window: Duration) -> f64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut read =
        async || match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the source ended inside the window: make it longer"),
            Ok(Ok(n)) => n as u64,
            Ok(Err(e)) => panic!("read failed: {e}"),
            Err(_) => panic!("no byte for 10s"),
        };
    let warming = Instant::now();
    while warming.elapsed() < WARM_UP {
        read().await;
    }
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < window {
        bytes += read().await;
    }
    bytes as f64 / started.elapsed().as_secs_f64()
}

fn assert_near(measured: f64, limit: f64, what: &str) {
    let off = (measured - limit) / limit;
    assert!(
        off.abs() <= TOLERANCE,
        "{what}: {measured:.0} B/s against a limit of {limit:.0} B/s ({:+.1} %)",
        off * 100.0
    );
    eprintln!(
        "{what}: {measured:.0} B/s, limit {limit:.0} B/s ({:+.1} %)",
        off * 100.0
    );
}

/// An htpasswd file of plain passwords, `NAME:secret` for each name.
fn users_file(dir: &Path, names: &[&str]) -> String {
    let path = dir.join("users");
    let lines: String = names
        .iter()
        .map(|n| format!("{n}:{{PLAIN}}secret\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    path.display().to_string()
}

/// `CONNECT target` as `user`; the stream after the answer's head, and its status line.
async fn connect_as(proxy: SocketAddr, target: SocketAddr, user: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
        basic(user, "secret")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    let status = head.lines().next().unwrap_or_default().to_string();
    (stream, status)
}

/// Sends the same 64 KiB over and over until the reader goes: cheap to serve, so the test's
/// runtime stays free to measure.
async fn endless_source() -> SocketAddr {
    serve("127.0.0.1:0", |mut stream| async move {
        let chunk = pattern(64 * 1024, 9);
        while stream.write_all(&chunk).await.is_ok() {}
    })
    .await
}

/// An origin that answers every request on a connection with a `200` of `len` bytes, written
/// as fast as the proxy takes them.
async fn body_origin(len: usize) -> SocketAddr {
    serve("127.0.0.1:0", move |mut stream| async move {
        let body = pattern(len, 5);
        loop {
            let Some(_) = read_request_head(&mut stream).await else {
                return;
            };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(&body).await.is_err()
            {
                return;
            }
        }
    })
    .await
}

/// `sluice -t` on `config`: whether it passed, and what it said.
fn sluice_t(config: &str) -> (bool, String) {
    let dir = TempDir::new();
    let path = dir.0.join("proxy.conf");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The value of the metric line starting with `series ` (name and labels), once no tunnel is
/// open (a tunnel's counts are added when it ends).
async fn metric(status: SocketAddr, series: &str) -> Option<f64> {
    let settled = eventually(async || {
        let scrape = exchange(
            status,
            format!("GET /metrics HTTP/1.1\r\nHost: {status}\r\n\r\n").as_bytes(),
        )
        .await;
        scrape
            .body
            .contains("\nsluice_tunnels_open 0\n")
            .then_some(scrape.body)
    })
    .await
    .expect("tunnels stayed open");
    settled
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .map(|v| v.parse().unwrap())
}

/// Waits (the writer flushes within a second) until `path` holds at least `count` lines.
async fn log_lines(path: &Path, count: usize) -> Vec<String> {
    eventually(async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        (lines.len() >= count).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("{} did not get {count} lines", path.display()))
}

/// `limit_rate` holds a tunnel's download (spliced: both ends are plain sockets) to its rate
/// over five seconds, and its upload too.
#[tokio::test]
async fn limit_rate_holds_a_spliced_tunnel_both_ways() {
    let _alone = MEASURING.lock().await;
    let limit = 256 * 1024;
    let source = endless_source().await;
    let sink = sink_server().await;
    let proxy = Proxy::start(&open_config("    limit_rate 256k;"));
    let mut down = tunnel(proxy.addr(), &source.to_string()).await;
    let upload = async {
        // Two and a half seconds' worth, timed until the sink has counted every byte.
        let mut up = tunnel(proxy.addr(), &sink.to_string()).await;
        let data = pattern(limit * 5 / 2, 3);
        let started = Instant::now();
        up.write_all(&data).await.unwrap();
        up.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), up.read_to_string(&mut answer))
            .await
            .expect("the sink answers")
            .unwrap();
        assert!(answer.starts_with(&format!("{} ", data.len())), "{answer}");
        data.len() as f64 / started.elapsed().as_secs_f64()
    };
    let (down_rate, up_rate) = tokio::join!(rate_over(&mut down, WINDOW), upload);
    assert_near(down_rate, limit as f64, "tunnel download, limit_rate 256k");
    assert_near(up_rate, limit as f64, "tunnel upload, limit_rate 256k");
}

/// A forwarded response's body is held to `limit_rate` too; `limit_rate_after` lets its first
/// bytes through at full speed.
#[tokio::test]
async fn limit_rate_holds_a_forwarded_body_after_its_free_bytes() {
    let _alone = MEASURING.lock().await;
    let limit = 128 * 1024;
    let free = 2 << 20;
    let origin = body_origin(free + limit * 8).await;
    let proxy = Proxy::start(&open_config(
        "    limit_rate 128k;\n    limit_rate_after 2m;\n    \
         location / { proxy_pass http://$http_host$request_uri; }",
    ));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!("GET http://{0}/big HTTP/1.1\r\nHost: {0}\r\n\r\n", origin);
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    // The free part: at the limit it would take 16 s.
    let started = Instant::now();
    let mut first = vec![0u8; free];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut first))
        .await
        .expect("the free bytes arrive")
        .unwrap();
    let free_took = started.elapsed();
    let at_limit = Duration::from_secs_f64(free as f64 / limit as f64);
    assert!(
        free_took < at_limit / 4,
        "limit_rate_after 2m: the first 2 MiB took {free_took:?}, the limit would take {at_limit:?}"
    );
    let rate = rate_over(&mut stream, WINDOW).await;
    assert_near(rate, limit as f64, "forwarded body after limit_rate_after");
}

/// Descriptors open in the process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A tunnel waiting for its budget holds no pipe (two descriptors and up to 256 KiB of kernel
/// pages each): many slow tunnels cost their sockets, and at most the pool's pipes besides.
#[tokio::test]
async fn tunnels_waiting_for_their_budget_hold_no_pipe() {
    const TUNNELS: usize = 150;
    /// Empty pipes the proxy keeps for reuse, at most (`splice::POOL_MAX`), two descriptors each.
    const POOLED: usize = 64;
    let source = endless_source().await;
    let proxy = Proxy::start(&open_config("    limit_rate 4k;"));
    let pid = proxy.pid();
    let base = open_files(pid);
    let mut readers = Vec::new();
    for _ in 0..TUNNELS {
        let mut stream = tunnel(proxy.addr(), &source.to_string()).await;
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
            }
        }));
    }
    // Every tunnel moves bytes now, a grant at a time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut most = 0;
    for _ in 0..10 {
        most = most.max(open_files(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sockets = 2 * TUNNELS;
    eprintln!(
        "{TUNNELS} limited tunnels: {} descriptors over the {base} at start",
        most - base
    );
    assert!(
        most <= base + sockets + 2 * POOLED + 16,
        "{most} descriptors: {base} at start, {sockets} for the tunnels' sockets, pipes held while waiting"
    );
    for reader in readers {
        reader.abort();
    }
}

/// Two tunnels of one client share `limit_rate_per_client`: together they keep to it, and
/// each gets a fair part of it.
#[tokio::test]
async fn connections_of_one_client_share_its_rate_fairly() {
    let _alone = MEASURING.lock().await;
    let limit = 256.0 * 1024.0;
    let source = endless_source().await;
    let proxy = Proxy::start(&open_config("    limit_rate_per_client 256k;"));
    let mut one = tunnel(proxy.addr(), &source.to_string()).await;
    let mut two = tunnel(proxy.addr(), &source.to_string()).await;
    let (a, b) = tokio::join!(rate_over(&mut one, WINDOW), rate_over(&mut two, WINDOW));
    assert_near(a + b, limit, "two tunnels of one client together");
    eprintln!("their shares: {a:.0} + {b:.0} B/s");
    for (rate, which) in [(a, "first"), (b, "second")] {
        assert!(
            rate > limit * FAIR_SHARE,
            "the {which} tunnel got {rate:.0} B/s of {limit:.0} ({a:.0} + {b:.0}): not a fair share"
        );
    }
}

/// A reload keeps the shared budgets: a tunnel opened before it and one opened after it
/// still share their client's rate.
#[tokio::test]
async fn a_reload_keeps_a_client_s_shared_budget() {
    let _alone = MEASURING.lock().await;
    let limit = 256.0 * 1024.0;
    let source = endless_source().await;
    let config = open_config("    limit_rate_per_client 256k;");
    let proxy = Proxy::start(&config);
    let mut before = tunnel(proxy.addr(), &source.to_string()).await;
    std::fs::write(proxy.config_path(), format!("{config}\n# reloaded\n")).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(outcome.contains("reloaded "), "{outcome}");
    let mut after = tunnel(proxy.addr(), &source.to_string()).await;
    let (a, b) = tokio::join!(
        rate_over(&mut before, WINDOW),
        rate_over(&mut after, WINDOW)
    );
    assert_near(
        a + b,
        limit,
        "one tunnel from before a reload and one from after it",
    );
}

/// `limit_rate_per_user` is shared by every connection of one user, whatever its client;
/// another user has a budget of its own; the limit of a `users` block applies to its users;
/// the metrics count delayed bytes, and count users apart only when a `users` block names them.
#[tokio::test]
async fn connections_of_one_user_share_its_rate_and_named_users_are_counted() {
    let _alone = MEASURING.lock().await;
    let limit = 192.0 * 1024.0;
    let slow = 96.0 * 1024.0;
    let source = endless_source().await;
    let dir = TempDir::new();
    let file = users_file(&dir.0, &["alice", "bob", "carol"]);
    let proxy = Proxy::start(&format!(
        "status_listen 127.0.0.1:0;\n{}",
        open_config(&format!(
            "    auth_basic \"limits\";\n    auth_basic_user_file {file};\n    \
             limit_rate_per_user 192k;\n    users carol {{ limit_rate 96k; }}"
        ))
    ));
    let status = proxy.status_addr();
    let target = source;
    let (mut a1, s1) = connect_as(proxy.addr(), target, "alice").await;
    let (mut a2, s2) = connect_as(proxy.addr(), target, "alice").await;
    let (mut b1, s3) = connect_as(proxy.addr(), target, "bob").await;
    let (mut c1, s4) = connect_as(proxy.addr(), target, "carol").await;
    for s in [s1, s2, s3, s4] {
        assert!(s.starts_with("HTTP/1.1 200"), "{s}");
    }
    let (x, y, b, c) = tokio::join!(
        rate_over(&mut a1, WINDOW),
        rate_over(&mut a2, WINDOW),
        rate_over(&mut b1, WINDOW),
        rate_over(&mut c1, WINDOW),
    );
    assert_near(x + y, limit, "alice's two tunnels together");
    eprintln!("her shares: {x:.0} + {y:.0} B/s");
    assert!(
        x > limit * FAIR_SHARE && y > limit * FAIR_SHARE,
        "alice: {x:.0} + {y:.0}"
    );
    assert_near(b, limit, "bob, on a budget of his own");
    assert_near(c, slow, "carol, limit_rate 96k in her users block");
    drop((a1, a2, b1, c1));
    let delayed = metric(status, "sluice_limit_delayed_bytes_total").await;
    assert!(delayed.unwrap() > 0.0, "{delayed:?}");
    let carol = metric(
        status,
        "sluice_user_limit_delayed_bytes_total{user=\"carol\"}",
    )
    .await;
    assert!(carol.unwrap() > 0.0, "{carol:?}");
    let carol = metric(status, "sluice_user_requests_total{user=\"carol\"}").await;
    assert_eq!(carol, Some(1.0));
    let down = "sluice_user_bytes_total{user=\"carol\",direction=\"down\"}";
    let carol = metric(status, down).await;
    assert!(carol.unwrap() > slow, "{carol:?}");
    let alice = metric(status, "sluice_user_requests_total{user=\"alice\"}").await;
    assert_eq!(alice, None, "alice is named in no users block");
}

/// A `users` block gives its users other destination and port rules; everyone else keeps the
/// server's.
#[tokio::test]
async fn users_blocks_give_their_users_their_own_reach() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let file = users_file(&dir.0, &["builder", "intern", "guest"]);
    // The server may reach nothing on loopback; builders may; interns may, but not this port.
    let proxy = Proxy::start(&format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         auth_basic \"reach\";\n    auth_basic_user_file {file};\n    \
         users builder ci {{ destination_allow 127.0.0.0/8; }}\n    \
         users intern {{ destination_allow 127.0.0.0/8; proxy_connect_allow 443; }}\n}}\n"
    ));
    let (mut stream, status) = connect_as(proxy.addr(), echo, "builder").await;
    assert!(status.starts_with("HTTP/1.1 200"), "builder: {status}");
    stream.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    let (_, status) = connect_as(proxy.addr(), echo, "intern").await;
    assert!(status.starts_with("HTTP/1.1 403"), "intern, port: {status}");
    let (_, status) = connect_as(proxy.addr(), echo, "guest").await;
    assert!(
        status.starts_with("HTTP/1.1 403"),
        "guest, server rules: {status}"
    );
}

/// A forwarded request of a user the rules refuse gets `403`, even when an upstream
/// connection another user opened to the same origin waits in the pool.
#[tokio::test]
async fn a_pooled_upstream_connection_is_judged_again_for_each_user() {
    let origin = Origin::start(|_| ok(b"hello")).await;
    let dir = TempDir::new();
    let file = users_file(&dir.0, &["builder", "guest"]);
    let proxy = Proxy::start(&format!(
        "server {{\n    listen 127.0.0.1:0;\n    auth_basic \"reach\";\n    \
         auth_basic_user_file {file};\n    users builder {{ destination_allow 127.0.0.0/8; }}\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n"
    ));
    let request = |user: &str| {
        format!(
            "GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\nProxy-Authorization: {1}\r\n\r\n",
            origin.addr,
            basic(user, "secret")
        )
    };
    let mut builder = TcpStream::connect(proxy.addr()).await.unwrap();
    builder
        .write_all(request("builder").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (status, _, body) = read_response(&mut builder, &mut buf, false).await.unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    // The builder's upstream connection is idle in the pool now.
    let guest = exchange(proxy.addr(), request("guest").as_bytes()).await;
    assert_eq!(guest.status, 403, "{}", guest.head);
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        origin.recorded().len(),
        1,
        "the guest's request reached the origin"
    );
}

#[test]
fn users_blocks_are_checked_with_file_and_line() {
    let dir = TempDir::new();
    let file = users_file(&dir.0, &["a"]);
    let server = |body: &str| {
        format!("server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n{body}\n}}\n")
    };
    let auth = format!("    auth_basic \"x\";\n    auth_basic_user_file {file};\n");
    for (config, expected) in [
        (
            server("    users a { limit_rate 1m; }"),
            "\"users\" needs \"auth_basic\" in the same server block or above it",
        ),
        (
            server(&format!("{auth}    users a {{ }}\n    users b a {{ }}")),
            "user \"a\" is already named by the \"users\" block in",
        ),
        (
            server(&format!("{auth}    users a {{ allow all; }}")),
            "\"allow\" directive is not allowed here",
        ),
        (
            server(&format!("{auth}    users {{ }}")),
            "invalid number of arguments in \"users\" directive",
        ),
        (
            server("    limit_rate fast;"),
            "invalid value \"fast\" in \"limit_rate\" directive",
        ),
        (
            server("    location / { limit_rate 1m; }"),
            "\"limit_rate\" in a location is not supported",
        ),
        (
            server("    destination_mode audit;"),
            "invalid value \"audit\" in \"destination_mode\" directive",
        ),
    ] {
        let (ok, said) = sluice_t(&config);
        assert!(!ok, "accepted:\n{config}");
        assert!(said.contains(expected), "{config}\nsaid: {said}");
        assert!(said.contains("proxy.conf:"), "no file:line in {said}");
    }
    let (ok, said) = sluice_t(&server(&format!(
        "{auth}    limit_rate 4m;\n    limit_rate_after 1m;\n    limit_rate_per_client 8m;\n    \
         limit_rate_per_user 2m;\n    destination_mode report;\n    \
         users a {{ destination_allow .example.com; destination_deny all; \
         destination_mode enforce; proxy_connect_allow 443; limit_rate 512k; }}"
    )));
    assert!(ok, "{said}");
    assert!(!said.contains("[warn]"), "{said}");
    // Without a way to name users, a per-user limit would silently limit nobody.
    let (ok, said) = sluice_t(&server("    limit_rate_per_user 2m;"));
    assert!(ok, "{said}");
    assert!(
        said.contains("\"limit_rate_per_user\" has no effect here: no client is named")
            && said.contains("proxy.conf:1"),
        "{said}"
    );
}

/// `destination_mode report`: what a rule would deny is served, logged `would-deny` and
/// counted; the built-in refusal of loopback still holds.
#[tokio::test]
async fn report_mode_serves_and_logs_what_a_rule_would_deny() {
    let echo = echo_server().await;
    let origin = Origin::start(|_| ok(b"reported")).await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    // 127.0.0.1 is denied by the first rule and opened by the next; ::1 by none.
    let proxy = Proxy::start(&format!(
        "status_listen 127.0.0.1:0;\nhttp {{\n    log_format v '$request $status $destination_verdict';\n    \
         server {{\n        listen 127.0.0.1:0;\n        proxy_connect;\n        \
         proxy_connect_allow all;\n        access_log {} v;\n        destination_mode report;\n        \
         destination_deny 127.0.0.1;\n        destination_allow 127.0.0.0/8;\n        \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n    }}\n}}\n",
        log.display()
    ));
    let status = proxy.status_addr();
    let mut stream = tunnel(proxy.addr(), &echo.to_string()).await;
    stream.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    drop(stream);
    let forwarded = exchange(
        proxy.addr(),
        format!(
            "GET http://{0}/x HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            origin.addr
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.head);
    assert_eq!(forwarded.body, "reported");
    let loopback6 = format!("[::1]:{}", echo.port());
    let (_, head) = connect(proxy.addr(), &loopback6).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let lines = log_lines(&log, 3).await;
    let verdict_of = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line for {needle} in {lines:?}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(verdict_of(&format!("CONNECT {echo} ")), "would-deny");
    assert_eq!(verdict_of("/x HTTP/1.1 200"), "would-deny");
    assert_eq!(verdict_of(&format!("CONNECT {loopback6} ")), "deny");
    let counted = metric(status, "sluice_destination_would_deny_total").await;
    assert_eq!(counted, Some(2.0));
}

/// Without `report`, the same rules refuse, and the log says `deny`.
#[tokio::test]
async fn enforce_mode_refuses_and_logs_deny() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let proxy = Proxy::start(&format!(
        "http {{\n    log_format v '$request $status $destination_verdict';\n    \
         server {{\n        listen 127.0.0.1:0;\n        proxy_connect;\n        \
         proxy_connect_allow all;\n        access_log {} v;\n        \
         destination_deny 127.0.0.1;\n        destination_allow 127.0.0.0/8;\n    }}\n}}\n",
        log.display()
    ));
    let (_, head) = connect(proxy.addr(), &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].ends_with(" 403 deny"), "{lines:?}");
}
