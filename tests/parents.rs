//! Parent proxies over loopback: sluice chained to a second sluice with `auth_basic`, to
//! Debian's tinyproxy and squid, and to small raw parents for the answers real ones give
//! rarely (bytes right after a 200, no answer at all).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    ClosedPort, Origin, Proxy, TempDir, basic, echo_server, eventually, exchange, ok, read_head,
    read_response, require_tool, serve, sighup,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The user and password the parent sluice accepts.
const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pw";

/// A sluice that serves CONNECT and forwarding to loopback, with `auth_basic` for alice.
fn parent_sluice(dir: &Path) -> Proxy {
    let users = dir.join("users");
    std::fs::write(&users, format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
    Proxy::start(&format!(
        "server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8;\n    auth_basic parent;\n    \
         auth_basic_user_file {};\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n",
        users.display()
    ))
}

/// The child sluice: `parents` at the top level, `server_extra` in its server, which
/// forwards and serves CONNECT to loopback and logs `$upstream_proxy $upstream_addr` to
/// `dir/access.log`.
fn child_sluice(dir: &Path, parents: &str, server_extra: &str) -> Proxy {
    Proxy::start(&format!(
        "{parents}\nlog_format routes '$status $upstream_proxy $upstream_addr';\n\
         server {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         proxy_connect_connect_timeout 2s;\n    \
         destination_allow 127.0.0.0/8;\n    access_log {} routes;\n{server_extra}\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n",
        dir.join("access.log").display()
    ))
}

/// A sluice whose `route PATTERN corp;` goes to the one-server parent `corp` at `parent`,
/// with the credentials in `cred`.
fn via_corp(dir: &Path, parent: impl std::fmt::Display, cred: &Path, pattern: &str) -> Proxy {
    child_sluice(
        dir,
        &format!(
            "parent corp {{ server {parent}; credentials_file {}; }}",
            cred.display()
        ),
        &format!("    route {pattern} corp;"),
    )
}

/// A credentials file holding `user:password`.
fn credentials(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join(format!("{user}.cred"));
    std::fs::write(&path, format!("{user}:{password}\n")).unwrap();
    path
}

/// Waits (bounded) for the access log to hold `lines` lines, and returns them.
async fn log_lines(dir: &Path, lines: usize) -> Vec<String> {
    let path = dir.join("access.log");
    eventually(async || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found: Vec<String> = text.lines().map(str::to_string).collect();
        (found.len() >= lines).then_some(found)
    })
    .await
    .unwrap_or_else(|| panic!("fewer than {lines} lines in {}", path.display()))
}

/// CONNECTs through `proxy` to `target` with `early` bytes sent along with the head, and
/// returns the answer head and the stream after it.
async fn connect_with_early(proxy: SocketAddr, target: &str, early: &[u8]) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes();
    request.extend_from_slice(early);
    stream.write_all(&request).await.unwrap();
    let head = read_head(&mut stream).await;
    (head, stream)
}

/// Reads exactly `n` bytes, bounded in time.
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .expect("bytes in time")
        .unwrap();
    got
}

/// Sends a tunnel's bytes both ways through an echo origin and checks them exactly, early
/// bytes first.
async fn assert_tunnel_exact(proxy: SocketAddr) {
    let echo = echo_server().await;
    let (head, mut stream) = connect_with_early(proxy, &echo.to_string(), b"early:").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&payload).await.unwrap();
    assert_eq!(read_n(&mut stream, 6).await, b"early:");
    assert_eq!(read_n(&mut stream, payload.len()).await, payload);
}

/// A plain GET through `proxy` to a fresh origin, which must see it.
async fn assert_get_reaches_origin(proxy: SocketAddr) -> Origin {
    let origin = Origin::start(|_| ok(b"from origin")).await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!(
        "GET http://{}/path?q=1 HTTP/1.1\r\nHost: {}\r\nProxy-Authorization: {}\r\n\r\n",
        origin.addr,
        origin.addr,
        basic("client", "client-secret")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (status, head, body) = tokio::time::timeout(
        Duration::from_secs(10),
        read_response(&mut stream, &mut buf, false),
    )
    .await
    .expect("an answer in time")
    .expect("a response");
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"from origin");
    let recorded = origin.recorded();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].head.starts_with("GET /path?q=1 HTTP/1.1\r\n"));
    origin
}

#[tokio::test]
async fn connect_through_a_sluice_parent_with_credentials_is_exact_both_ways() {
    let dir = TempDir::new();
    let parent = parent_sluice(&dir.0);
    let cred = credentials(&dir.0, USER, PASSWORD);
    let child = via_corp(&dir.0, parent.addr(), &cred, "default");
    assert_tunnel_exact(child.addr()).await;
    let lines = log_lines(&dir.0, 1).await;
    assert_eq!(lines[0], format!("200 corp {}", parent.addr()));
    assert!(!child.log().contains(PASSWORD), "the password is logged");
}

#[tokio::test]
async fn plain_get_goes_to_the_parent_in_absolute_form_with_its_credentials() {
    let dir = TempDir::new();
    let parent = parent_sluice(&dir.0);
    let cred = credentials(&dir.0, USER, PASSWORD);
    let child = via_corp(&dir.0, parent.addr(), &cred, "default");
    let origin = assert_get_reaches_origin(child.addr()).await;
    // The parent got the absolute form and, requiring alice's credentials, served it; the
    // client's own Proxy-Authorization went nowhere.
    let recorded = origin.recorded();
    assert_eq!(recorded[0].header("proxy-authorization"), None);
    parent
        .wait_for_log(&format!("\"GET http://{}/path?q=1\" 200", origin.addr))
        .await;
    let lines = log_lines(&dir.0, 1).await;
    assert_eq!(lines[0], format!("200 corp {}", parent.addr()));
    let encoded = basic(USER, PASSWORD);
    let log = child.log();
    assert!(
        !log.contains(PASSWORD) && !log.contains(&encoded[6..]),
        "{log}"
    );
}

#[tokio::test]
async fn the_parent_gets_its_own_credentials_and_never_the_clients() {
    let dir = TempDir::new();
    // A forwarding parent is an HTTP server that is sent absolute-form requests.
    let parent = Origin::start(|_| ok(b"from parent")).await;
    let cred = credentials(&dir.0, USER, PASSWORD);
    let child = via_corp(&dir.0, parent.addr, &cred, ".example.test");
    let answer = exchange(
        child.addr(),
        format!(
            "GET http://www.example.test:8080/a HTTP/1.1\r\nHost: www.example.test:8080\r\n\
             Proxy-Authorization: {}\r\nConnection: close\r\n\r\n",
            basic("client", "client-secret")
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let recorded = parent.recorded();
    assert_eq!(recorded.len(), 1);
    let head = &recorded[0].head;
    assert!(
        head.starts_with("GET http://www.example.test:8080/a HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(recorded[0].header("host"), Some("www.example.test:8080"));
    assert_eq!(
        recorded[0].header("proxy-authorization"),
        Some(basic(USER, PASSWORD).as_str())
    );
    assert_eq!(head.matches("Proxy-Authorization").count(), 1, "{head}");
}

#[tokio::test]
async fn one_kept_alive_parent_connection_carries_requests_for_any_destination() {
    let dir = TempDir::new();
    let parent = Origin::start(|_| ok(b"from parent")).await;
    let child = child_sluice(
        &dir.0,
        &format!("parent corp {{ server {}; }}", parent.addr),
        "    route default corp;",
    );
    let mut stream = TcpStream::connect(child.addr()).await.unwrap();
    let mut buf = Vec::new();
    for host in ["a.example.test", "b.example.test", "a.example.test"] {
        let request = format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, head, _) = tokio::time::timeout(
            Duration::from_secs(10),
            read_response(&mut stream, &mut buf, false),
        )
        .await
        .expect("an answer in time")
        .expect("a response");
        assert_eq!(status, 200, "{head}");
    }
    let recorded = parent.recorded();
    assert_eq!(recorded.len(), 3);
    assert!(
        recorded[1]
            .head
            .starts_with("GET http://b.example.test/ HTTP/1.1")
    );
    assert_eq!(parent.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_credentials_are_a_502_naming_the_parent_never_a_407() {
    let dir = TempDir::new();
    let parent = parent_sluice(&dir.0);
    let cred = credentials(&dir.0, USER, "wrong-password");
    let child = via_corp(&dir.0, parent.addr(), &cred, "default");
    let echo = echo_server().await;
    let answer = exchange(
        child.addr(),
        format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes(),
    )
    .await;
    answer.assert_well_formed();
    assert_eq!(answer.status, 502, "{}", answer.head);
    assert!(
        answer.body.contains("\"corp\"") && answer.body.contains("407"),
        "{}",
        answer.body
    );
    assert!(!answer.head.contains("Proxy-Authenticate"));
    // A forwarded request the parent answers with its 407 gets the same 502.
    let origin = Origin::start(|_| ok(b"never")).await;
    let answer = exchange(
        child.addr(),
        format!("GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\n\r\n", origin.addr).as_bytes(),
    )
    .await;
    answer.assert_well_formed();
    assert_eq!(answer.status, 502, "{}", answer.head);
    assert!(
        answer.body.contains("\"corp\"") && answer.body.contains("407"),
        "{}",
        answer.body
    );
    assert!(origin.recorded().is_empty());
    assert!(!child.log().contains("wrong-password"));
}

#[tokio::test]
async fn a_dead_first_server_is_skipped_and_then_left_out_for_fail_timeout() {
    let dir = TempDir::new();
    let parent = parent_sluice(&dir.0);
    let cred = credentials(&dir.0, USER, PASSWORD);
    // The first server accepts and closes at once: each try is seen, and each is a failure.
    let tries = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&tries);
    let broken = serve("127.0.0.1:0", move |stream| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { drop(stream) }
    })
    .await;
    let child = child_sluice(
        &dir.0,
        &format!(
            "parent corp {{\n    server {broken} max_fails=1 fail_timeout=60s;\n    \
             server {};\n    credentials_file {};\n}}",
            parent.addr(),
            cred.display()
        ),
        "    route default corp;",
    );
    assert_tunnel_exact(child.addr()).await;
    assert_tunnel_exact(child.addr()).await;
    assert_eq!(
        tries.load(Ordering::SeqCst),
        1,
        "a server down after max_fails is tried again within fail_timeout"
    );
    let lines = log_lines(&dir.0, 2).await;
    assert!(
        lines
            .iter()
            .all(|l| *l == format!("200 corp {}", parent.addr())),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_backup_is_used_only_when_every_primary_is_down() {
    let dir = TempDir::new();
    let backup = parent_sluice(&dir.0);
    let primary = parent_sluice(&dir.0);
    let cred = credentials(&dir.0, USER, PASSWORD);
    let dead = ClosedPort::new();
    let child = child_sluice(
        &dir.0,
        &format!(
            "parent corp {{\n    server {} backup;\n    server {};\n    \
             server {};\n    credentials_file {};\n}}",
            backup.addr(),
            dead.addr,
            primary.addr(),
            cred.display()
        ),
        "    route default corp;",
    );
    assert_tunnel_exact(child.addr()).await;
    let lines = log_lines(&dir.0, 1).await;
    assert_eq!(lines[0], format!("200 corp {}", primary.addr()));
    drop(primary);
    assert_tunnel_exact(child.addr()).await;
    let lines = log_lines(&dir.0, 2).await;
    assert_eq!(lines[1], format!("200 corp {}", backup.addr()));
}

#[tokio::test]
async fn all_servers_dead_is_a_502_naming_the_parent_and_each_server() {
    let dir = TempDir::new();
    let dead = [ClosedPort::new(), ClosedPort::new()];
    let (first, second) = (dead[0].addr, dead[1].addr);
    let child = child_sluice(
        &dir.0,
        &format!("parent corp {{ server {first}; server {second}; }}"),
        "    route default corp;",
    );
    let echo = echo_server().await;
    let answer = exchange(
        child.addr(),
        format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes(),
    )
    .await;
    answer.assert_well_formed();
    assert_eq!(answer.status, 502, "{}", answer.head);
    for needle in [
        "\"corp\"".to_string(),
        format!("{first}: connection refused"),
        format!("{second}: connection refused"),
    ] {
        assert!(
            answer.body.contains(&needle),
            "{needle} not in {}",
            answer.body
        );
    }
    // Forwarded requests get the same answer.
    let answer = exchange(
        child.addr(),
        format!("GET http://{echo}/ HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.head);
    assert!(answer.body.contains("\"corp\""), "{}", answer.body);
}

#[tokio::test]
async fn a_parent_that_never_answers_the_connect_is_a_504() {
    let dir = TempDir::new();
    let silent = serve("127.0.0.1:0", |mut stream| async move {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    let child = child_sluice(
        &dir.0,
        &format!("parent corp {{ server {silent}; }}"),
        "    route default corp;",
    );
    let echo = echo_server().await;
    let answer = exchange(
        child.addr(),
        format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 504, "{}", answer.head);
    assert!(answer.body.contains("\"corp\""), "{}", answer.body);
}

#[tokio::test]
async fn bytes_the_parent_sends_with_its_200_reach_the_client() {
    let dir = TempDir::new();
    // A parent that writes its answer and the first tunnel bytes in one segment.
    let parent = serve("127.0.0.1:0", |mut stream| async move {
        let _ = common::read_request_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\nbanner from origin")
            .await;
        let mut rest = [0u8; 64];
        let _ = stream.read(&mut rest).await;
    })
    .await;
    let child = child_sluice(
        &dir.0,
        &format!("parent corp {{ server {parent}; }}"),
        "    route default corp;",
    );
    let (head, mut stream) = connect_with_early(child.addr(), "example.invalid:443", b"").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(read_n(&mut stream, 18).await, b"banner from origin");
}

#[tokio::test]
async fn direct_routes_bypass_the_parent() {
    let dir = TempDir::new();
    let dead = ClosedPort::new();
    let child = child_sluice(
        &dir.0,
        &format!("parent corp {{ server {}; }}", dead.addr),
        "    route 127.0.0.0/8 direct;\n    route default corp;",
    );
    assert_tunnel_exact(child.addr()).await;
    assert_get_reaches_origin(child.addr()).await;
    let lines = log_lines(&dir.0, 2).await;
    for line in &lines {
        assert!(line.starts_with("200 direct 127.0.0.1:"), "{lines:?}");
    }
    // A name the rules send to the parent goes there, unresolved by sluice.
    let answer = exchange(
        child.addr(),
        b"CONNECT internal.example.invalid:443 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.head);
    assert!(answer.body.contains("\"corp\""), "{}", answer.body);
}

#[test]
fn route_and_parent_errors_name_file_and_line_and_never_the_password() {
    let dir = TempDir::new();
    let check = |config: &str| {
        let path = dir.0.join("check.conf");
        std::fs::write(&path, config).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["-t", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{config} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let server = "server {\n    listen 127.0.0.1:0;\n    route default corp;\n}\n";
    let error = check(server);
    assert!(
        error.contains("unknown parent \"corp\"") && error.contains("check.conf:3"),
        "{error}"
    );
    let missing = dir.0.join("missing.cred");
    let error = check(&format!(
        "parent corp {{\n    server 127.0.0.1:1;\n    credentials_file {};\n}}\n{server}",
        missing.display()
    ));
    assert!(
        error.contains("credentials_file") && error.contains("check.conf:3"),
        "{error}"
    );
    let unusable = dir.0.join("two.cred");
    std::fs::write(&unusable, "bob:hunter2-secret\ncarol:other-secret\n").unwrap();
    let error = check(&format!(
        "parent corp {{\n    server 127.0.0.1:1;\n    credentials_file {};\n}}\n{server}",
        unusable.display()
    ));
    assert!(error.contains("check.conf:3"), "{error}");
    assert!(!error.contains("secret"), "{error}");
    let error = check(&format!(
        "parent corp {{\n    server 127.0.0.1:1 weight=5;\n}}\n{server}"
    ));
    assert!(
        error.contains("\"weight=5\"") && error.contains("check.conf:2"),
        "{error}"
    );
    let error = check(
        "server {\n    listen 127.0.0.1:0;\n    location / {\n        route default direct;\n    }\n}\n",
    );
    assert!(
        error.contains("\"route\" directive is not allowed here") && error.contains("check.conf:4"),
        "{error}"
    );
    // A parent in `http`, named by a rule written before it, at `http` level.
    let path = dir.0.join("good.conf");
    std::fs::write(
        &path,
        "http {\n    route .corp.example corp;\n    server {\n        listen 127.0.0.1:0;\n    }\n    \
         parent corp { server 127.0.0.1:1; server 127.0.0.1:2 backup; }\n}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-t", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn reload_rereads_the_credentials_file() {
    let dir = TempDir::new();
    let parent = parent_sluice(&dir.0);
    let cred = credentials(&dir.0, USER, "old-wrong-password");
    let child = via_corp(&dir.0, parent.addr(), &cred, "default");
    let echo = echo_server().await;
    let request = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n");
    assert_eq!(exchange(child.addr(), request.as_bytes()).await.status, 502);
    credentials(&dir.0, USER, PASSWORD);
    let outcome = sighup(&child).await;
    assert!(outcome.contains("reloaded "), "{outcome}");
    let mut status = 0;
    for _ in 0..100 {
        let (head, _stream) = connect_with_early(child.addr(), &echo.to_string(), b"").await;
        status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the new credentials were not read on reload");
}

/// A real parent proxy run as this test's child, stopped by its PID.
struct ChildProxy {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until something accepts on `addr`.
async fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    for _ in 0..300 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {addr} within 15 s");
}

/// A free loopback port for a proxy that cannot be told to pick one.
async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// tinyproxy in the foreground, with Basic credentials required.
async fn tinyproxy() -> ChildProxy {
    let dir = TempDir::new();
    let addr = free_addr().await;
    let config = dir.0.join("tinyproxy.conf");
    std::fs::write(
        &config,
        format!(
            "Port {}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nMaxClients 20\n\
             BasicAuth {USER} {PASSWORD}\nLogLevel Info\n",
            addr.port()
        ),
    )
    .unwrap();
    let mut child = Command::new("tinyproxy")
        .args(["-d", "-c", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy starts");
    wait_listening(addr, &mut child, "tinyproxy").await;
    ChildProxy {
        child,
        addr,
        _dir: dir,
    }
}

/// squid in the foreground (`-N`), with its logs and PID file in a temporary directory.
async fn squid() -> ChildProxy {
    let dir = TempDir::new();
    // Started as root, squid writes its files as its own user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let addr = free_addr().await;
    let config = dir.0.join("squid.conf");
    let d = dir.0.display();
    std::fs::write(
        &config,
        format!(
            "http_port {addr}\nhttp_access allow localhost\nhttp_access deny all\n\
             cache deny all\naccess_log stdio:{d}/access.log\ncache_log {d}/cache.log\n\
             pid_filename {d}/squid.pid\ncoredump_dir {d}\npinger_enable off\n\
             shutdown_lifetime 0 seconds\n"
        ),
    )
    .unwrap();
    let mut child = Command::new("squid")
        .args(["-N", "-f", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("squid starts");
    wait_listening(addr, &mut child, "squid").await;
    ChildProxy {
        child,
        addr,
        _dir: dir,
    }
}

#[tokio::test]
async fn tinyproxy_as_parent_with_credentials() {
    if !require_tool("tinyproxy") {
        return;
    }
    let parent = tinyproxy().await;
    let dir = TempDir::new();
    let cred = credentials(&dir.0, USER, PASSWORD);
    let child = via_corp(&dir.0, parent.addr, &cred, "default");
    assert_tunnel_exact(child.addr()).await;
    assert_get_reaches_origin(child.addr()).await;
    let lines = log_lines(&dir.0, 2).await;
    assert!(
        lines
            .iter()
            .all(|l| *l == format!("200 corp {}", parent.addr)),
        "{lines:?}"
    );
}

#[tokio::test]
async fn squid_as_parent() {
    if !require_tool("squid") {
        return;
    }
    let parent = squid().await;
    let dir = TempDir::new();
    let child = child_sluice(
        &dir.0,
        &format!("parent corp {{ server {}; }}", parent.addr),
        "    route default corp;",
    );
    assert_tunnel_exact(child.addr()).await;
    assert_get_reaches_origin(child.addr()).await;
    let lines = log_lines(&dir.0, 2).await;
    assert!(
        lines
            .iter()
            .all(|l| *l == format!("200 corp {}", parent.addr)),
        "{lines:?}"
    );
}

#[tokio::test]
async fn metrics_count_requests_failures_and_servers_up_per_parent() {
    let dir = TempDir::new();
    let parent = parent_sluice(&dir.0);
    let cred = credentials(&dir.0, USER, PASSWORD);
    let dead = ClosedPort::new();
    let child = child_sluice(
        &dir.0,
        &format!(
            "status_listen 127.0.0.1:0;\nparent corp {{\n    server {} fail_timeout=60s;\n    \
             server {};\n    credentials_file {};\n}}",
            dead.addr,
            parent.addr(),
            cred.display()
        ),
        "    route default corp;",
    );
    assert_tunnel_exact(child.addr()).await;
    let status = child.status_addr();
    let scrape = exchange(
        status,
        format!("GET /metrics HTTP/1.1\r\nHost: {status}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(scrape.status, 200, "{}", scrape.head);
    for line in [
        "sluice_parent_requests_total{parent=\"corp\"} 1",
        "sluice_parent_failures_total{parent=\"corp\",cause=\"refused\"} 1",
        "sluice_parent_failures_total{parent=\"corp\",cause=\"rejected\"} 0",
        "sluice_parent_servers_up{parent=\"corp\"} 1",
    ] {
        assert!(
            scrape.body.lines().any(|l| l == line),
            "{line} not in:\n{}",
            scrape.body
        );
    }
}

#[tokio::test]
async fn destination_rules_apply_before_a_parent_is_asked() {
    let dir = TempDir::new();
    let tries = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&tries);
    let parent = serve("127.0.0.1:0", move |stream| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { drop(stream) }
    })
    .await;
    let child = child_sluice(
        &dir.0,
        &format!("parent corp {{ server {parent}; }}"),
        "    destination_deny .blocked.test 192.0.2.0/24;\n    route default corp;",
    );
    for target in ["www.blocked.test:443", "192.0.2.7:443"] {
        let answer = exchange(
            child.addr(),
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 403, "{target}: {}", answer.head);
    }
    let answer = exchange(
        child.addr(),
        b"GET http://www.blocked.test/ HTTP/1.1\r\nHost: www.blocked.test\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.head);
    assert_eq!(tries.load(Ordering::SeqCst), 0, "the parent was asked");
}
