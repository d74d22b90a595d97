//! Signals as an nginx operator sends them: SIGTERM and SIGINT are a fast shutdown (every
//! connection closed now, the access log flushed, exit 0); SIGQUIT is graceful
//! (tests/shutdown.rs); SIGUSR2 and SIGWINCH are logged and ignored, never fatal.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits (bounded) for `path` to hold `lines` lines, and returns its text.
async fn wait_for_lines(path: &std::path::Path, lines: usize) -> String {
    eventually(async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        (text.lines().count() >= lines).then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("{} never held {lines} lines", path.display()))
}

#[tokio::test]
async fn sigterm_and_sigint_close_an_open_tunnel_and_exit_0_with_its_log_line() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let echo = echo_server().await;
        let dir = TempDir::new();
        let log = dir.0.join("access.log");
        // A long shutdown_timeout: a graceful stop would still be waiting for the tunnel.
        let mut proxy = Proxy::start(&format!(
            "shutdown_timeout 60s;\nlog_format tunnel '$connect_port $status';\n{}",
            open_config(&format!("    access_log {} tunnel;", log.display()))
        ));
        let mut open = tunnel(proxy.addr(), &echo.to_string()).await;
        open.write_all(b"ping").await.unwrap();
        let mut back = [0; 4];
        open.read_exact(&mut back).await.unwrap();

        proxy.signal(signal);
        let status = proxy.wait_exit(LATENESS).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "signal {signal}: {status:?}\n{}",
            proxy.log()
        );
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(LATENESS, open.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "signal {signal}: the tunnel was not closed");
        // The tunnel's line reached the file before the process exited.
        let text = wait_for_lines(&log, 1).await;
        assert_eq!(text, format!("{} 200\n", echo.port()), "signal {signal}");
    }
}

#[tokio::test]
async fn sigusr2_and_sigwinch_are_logged_and_ignored() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(&open_config(""));
    let mut open = tunnel(proxy.addr(), &echo.to_string()).await;
    for (signal, name) in [(libc::SIGUSR2, "SIGUSR2"), (libc::SIGWINCH, "SIGWINCH")] {
        proxy.signal(signal);
        proxy
            .wait_for_log(&format!("{name} received and ignored"))
            .await;
    }
    assert!(
        proxy.wait_exit(Duration::ZERO).await.is_none(),
        "{}",
        proxy.log()
    );
    // Still serving: the open tunnel and a new one.
    open.write_all(b"still").await.unwrap();
    let mut back = [0; 5];
    open.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still");
    let (_stream, head) = connect(proxy.addr(), &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
}
