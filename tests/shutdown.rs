//! Stopping sluice gracefully: SIGQUIT stops accepting at once, lets open tunnels and requests
//! finish for up to `shutdown_timeout`, then exits 0; a SIGTERM meanwhile exits at once.
//! (SIGTERM and SIGINT alone are a fast shutdown: tests/signals.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn echo_round_trip(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0; bytes.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, bytes);
}

#[tokio::test]
async fn sigquit_refuses_new_clients_and_lets_a_tunnel_finish() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(&open_config(""));
    let mut tunnel_before = tunnel(proxy.addr(), &echo.to_string()).await;
    // An idle keep-alive client waiting for its next request is closed, not waited for.
    let mut idle = TcpStream::connect(proxy.addr()).await.unwrap();

    proxy.signal(libc::SIGQUIT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(proxy.addr()).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGQUIT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut buf = [0; 1];
    let idle_read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(idle_read, Ok(Ok(0) | Err(_))),
        "the idle client was not closed"
    );

    // The tunnel opened before keeps carrying bytes both ways...
    for round in 0..5u8 {
        echo_round_trip(&mut tunnel_before, &[round; 1000]).await;
    }
    assert!(
        proxy.wait_exit(Duration::from_millis(200)).await.is_none(),
        "exited while a tunnel was open"
    );
    // ...and when it ends, the process exits 0.
    drop(tunnel_before);
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits once the tunnel is done");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_wait() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(&format!("shutdown_timeout 1s;\n{}", open_config("")));
    let mut held = tunnel(proxy.addr(), &echo.to_string()).await;
    let started = Instant::now();
    proxy.signal(libc::SIGQUIT);
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits after shutdown_timeout");
    assert!(status.success(), "{status:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(1) + LATENESS,
        "took {took:?}"
    );
    let mut buf = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the tunnel was not closed at exit"
    );
}

#[tokio::test]
async fn sigterm_during_a_graceful_shutdown_exits_at_once() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(&open_config(""));
    let _held = tunnel(proxy.addr(), &echo.to_string()).await;
    proxy.signal(libc::SIGQUIT);
    proxy.wait_for_log("SIGQUIT received").await;
    assert!(
        proxy.wait_exit(Duration::ZERO).await.is_none(),
        "SIGQUIT must wait for the tunnel"
    );
    // At once: long before the 30 s that shutdown_timeout gives the tunnel by default.
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(LATENESS).await.expect("SIGTERM exits");
    assert!(status.success(), "{status:?}");
}
