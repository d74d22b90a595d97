//! `SIGHUP`: the configuration file is read again; a valid one serves new connections while
//! open tunnels keep flowing, an invalid one changes nothing and is reported with its line.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Echoes `bytes` through an open tunnel to an echo server.
async fn assert_echoes(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the echo answers")
        .unwrap();
    assert_eq!(back, bytes);
}

/// The status line of the answer to `CONNECT target` on a fresh connection.
async fn connect_status(proxy: SocketAddr, target: &str) -> String {
    let (_stream, head) = connect(proxy, target).await;
    head.lines().next().unwrap_or_default().to_string()
}

/// A port nothing listens on at the moment.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_changed_allow_list_applies_to_new_connections_while_an_open_tunnel_flows() {
    let echo = echo_server().await;
    let target = echo.to_string();
    let proxy = Proxy::start(&open_config(""));
    let mut before = tunnel(proxy.addr(), &target).await;
    assert_echoes(&mut before, b"before the reload").await;

    std::fs::write(proxy.config_path(), open_config("    deny 127.0.0.1;")).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(outcome.contains("reloaded "), "{outcome}");

    // The same listening socket, the new policy.
    assert_eq!(
        connect_status(proxy.addr(), &target).await,
        "HTTP/1.1 403 Forbidden"
    );
    // The tunnel opened under the old policy is untouched, both ways.
    assert_echoes(&mut before, b"after the reload").await;
    before.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), before.read_to_end(&mut rest))
        .await
        .expect("the half-close is passed on")
        .unwrap();
    assert!(rest.is_empty());

    // And back again.
    std::fs::write(proxy.config_path(), open_config("")).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded "));
    let mut after = tunnel(proxy.addr(), &target).await;
    assert_echoes(&mut after, b"allowed again").await;
}

#[tokio::test]
async fn a_broken_config_keeps_the_running_one_and_names_its_line() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    let mut open = tunnel(proxy.addr(), &echo.to_string()).await;

    let broken = open_config("    proxy_connect_allow 443 banana;");
    std::fs::write(proxy.config_path(), broken).unwrap();
    let outcome = sighup(&proxy).await;
    let file = proxy.config_path().display().to_string();
    assert!(
        outcome.contains("reload failed, still serving the previous configuration")
            && outcome.contains(&format!("{file}:6")),
        "{outcome}"
    );

    // Still serving, with the old policy (every port allowed), old and new connections alike.
    assert_echoes(&mut open, b"still here").await;
    let mut fresh = tunnel(proxy.addr(), &echo.to_string()).await;
    assert_echoes(&mut fresh, b"and new ones too").await;

    // A config that cannot even be read is the same.
    std::fs::remove_file(proxy.config_path()).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(outcome.contains("reload failed"), "{outcome}");
    let mut fresh = tunnel(proxy.addr(), &echo.to_string()).await;
    assert_echoes(&mut fresh, b"unchanged").await;
}

#[tokio::test]
async fn listeners_that_appear_are_opened_and_those_that_disappear_are_closed() {
    let echo = echo_server().await;
    let target = echo.to_string();
    let proxy = Proxy::start(&open_config(""));
    let port = free_port();
    let second = SocketAddr::from(([127, 0, 0, 1], port));
    let two_blocks = format!(
        "{}server {{\n    listen {second};\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8;\n    deny all;\n}}\n",
        open_config("")
    );
    std::fs::write(proxy.config_path(), &two_blocks).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded "));
    assert!(
        proxy
            .log()
            .contains(&format!("listening on {second} (listen in ")),
        "{}",
        proxy.log()
    );
    // The new listener serves its own block's policy; the first one is unchanged.
    assert_eq!(
        connect_status(second, &target).await,
        "HTTP/1.1 403 Forbidden"
    );
    let mut first = tunnel(proxy.addr(), &target).await;
    assert_echoes(&mut first, b"first block").await;

    // A tunnel through the second listener outlives the listener itself.
    let swap = format!(
        "{}server {{\n    listen {second};\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8;\n}}\n",
        open_config("")
    );
    std::fs::write(proxy.config_path(), &swap).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded "));
    let mut through_second = tunnel(second, &target).await;

    std::fs::write(proxy.config_path(), open_config("")).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded "));
    proxy
        .wait_for_log(&format!("no longer listening on {second}"))
        .await;
    let refused = TcpStream::connect(second).await;
    assert!(refused.is_err(), "{second} still accepts connections");
    assert_echoes(&mut through_second, b"outlives its listener").await;
    // The first listener kept its socket throughout.
    let mut again = tunnel(proxy.addr(), &target).await;
    assert_echoes(&mut again, b"same port").await;
}

#[tokio::test]
async fn a_reload_whose_new_listener_cannot_be_bound_changes_nothing() {
    let echo = echo_server().await;
    let target = echo.to_string();
    let proxy = Proxy::start(&open_config(""));
    // Somebody else holds the port the new config wants.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let config = format!(
        "{}server {{\n    listen {busy};\n    proxy_connect;\n}}\n",
        open_config("    deny all;")
    );
    std::fs::write(proxy.config_path(), config).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(
        outcome.contains(&format!("bind() to {busy} failed"))
            && outcome.contains("still serving the previous configuration"),
        "{outcome}"
    );
    // The `deny all` of the rejected config is not in force.
    let mut stream = tunnel(proxy.addr(), &target).await;
    assert_echoes(&mut stream, b"old policy").await;
}

#[tokio::test]
async fn sighup_then_sigquit_still_drains_and_exits() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(&format!("shutdown_timeout 10s;\n{}", open_config("")));
    let mut open = tunnel(proxy.addr(), &echo.to_string()).await;
    let shorter = format!("shutdown_timeout 1s;\n{}", open_config(""));
    std::fs::write(proxy.config_path(), shorter).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded "));
    proxy.signal(libc::SIGQUIT);
    // The tunnel is still open while draining...
    assert_echoes(&mut open, b"draining").await;
    // ... until the reloaded shutdown_timeout (1 s, not 10 s) closes it.
    let status = proxy.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// GET `path` on `addr`; the status line, or `None` if nothing listens there.
async fn status_line(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let head = read_head(&mut stream).await;
    head.lines().next().map(str::to_string)
}

#[tokio::test]
async fn a_reload_moves_the_status_listener_and_the_access_log() {
    let echo = echo_server().await;
    let dir = TempDir::new();
    let first_log = dir.0.join("first.log");
    let second_log = dir.0.join("second.log");
    let (first_status, second_status) = (free_port(), free_port());
    let config = |status: u16, log: &std::path::Path| {
        format!(
            "status_listen 127.0.0.1:{status};\n{}",
            open_config(&format!("    access_log {};", log.display()))
        )
    };
    let proxy = Proxy::start(&config(first_status, &first_log));
    let first = SocketAddr::from(([127, 0, 0, 1], first_status));
    let second = SocketAddr::from(([127, 0, 0, 1], second_status));
    assert_eq!(
        status_line(first, "/healthz").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    std::fs::write(proxy.config_path(), config(second_status, &second_log)).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded "));
    assert_eq!(
        status_line(second, "/healthz").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(
        status_line(first, "/healthz").await,
        None,
        "{first} still serves"
    );
    // The status port is one of the proxy's own addresses: never a tunnel destination.
    assert_eq!(
        connect_status(proxy.addr(), &second.to_string()).await,
        "HTTP/1.1 403 Forbidden"
    );

    let mut stream = tunnel(proxy.addr(), &echo.to_string()).await;
    assert_echoes(&mut stream, b"logged").await;
    drop(stream);
    let wanted = format!("CONNECT {echo} HTTP/1.1\" 200");
    let logged = eventually(async || {
        let second_lines = std::fs::read_to_string(&second_log).unwrap_or_default();
        second_lines
            .lines()
            .any(|l| l.contains(&wanted))
            .then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "no tunnel line in {}: {:?}",
        second_log.display(),
        std::fs::read_to_string(&second_log)
    );
    let first_lines = std::fs::read_to_string(&first_log).unwrap_or_default();
    assert!(!first_lines.contains(&wanted), "{first_lines}");
}

/// Makes a FIFO at `path`, which nothing writes to.
fn mkfifo(path: &std::path::Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) reads the NUL-terminated path only.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {}", path.display());
}

#[tokio::test]
async fn a_fifo_named_on_reload_is_refused_and_sigterm_still_stops_sluice() {
    let mut proxy = Proxy::start(&open_config(""));
    let dir = TempDir::new();

    // A user file that is a FIFO nothing writes to.
    let users = dir.0.join("users.fifo");
    mkfifo(&users);
    let with_users = format!(
        "    auth_basic \"proxy\";\n    auth_basic_user_file {};",
        users.display()
    );
    std::fs::write(proxy.config_path(), open_config(&with_users)).unwrap();
    let outcome = sighup(&proxy).await;
    assert!(
        outcome.contains("reload failed") && outcome.contains("not a regular file"),
        "{outcome}"
    );

    // The configuration file itself replaced by a FIFO.
    std::fs::remove_file(proxy.config_path()).unwrap();
    mkfifo(&proxy.config_path());
    let outcome = sighup(&proxy).await;
    assert!(
        outcome.contains("reload failed") && outcome.contains("not a regular file"),
        "{outcome}"
    );

    // Still serving the first configuration, and still obeying signals.
    let echo = echo_server().await;
    assert_eq!(
        connect_status(proxy.addr(), &echo.to_string()).await,
        "HTTP/1.1 200 Connection Established"
    );
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        proxy.log()
    );
}
