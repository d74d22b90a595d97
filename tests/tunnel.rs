//! CONNECT tunnels through the real binary: the answer, byte-exact transfer both ways, early
//! data, half-closes, resets, IPv6, idle timeout, many tunnels at once.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EIGHT_MIB: usize = 8 << 20;

#[tokio::test]
async fn answers_200_with_proxy_agent_exactly() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    let (_stream, head) = connect(proxy.addr(), &echo.to_string()).await;
    assert_eq!(head, established());
}

#[tokio::test]
async fn eight_mib_up_arrives_byte_exact_and_the_half_close_is_passed_on() {
    let sink = sink_server().await;
    let proxy = Proxy::start(&open_config(""));
    let mut stream = tunnel(proxy.addr(), &sink.to_string()).await;
    let data = pattern(EIGHT_MIB, 1);
    stream.write_all(&data).await.unwrap();
    // FIN from the client must reach the sink, and its answer must still come back.
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let expected = Fnv::of(&data);
    assert_eq!(answer, format!("{} {:016x}\n", expected.len, expected.hash));
}

#[tokio::test]
async fn eight_mib_down_arrives_byte_exact() {
    let source = source_server(EIGHT_MIB).await;
    let proxy = Proxy::start(&open_config(""));
    let mut stream = tunnel(proxy.addr(), &source.to_string()).await;
    let mut received = Vec::new();
    stream.read_to_end(&mut received).await.unwrap();
    assert_eq!(received.len(), EIGHT_MIB);
    assert!(received == pattern(EIGHT_MIB, 7), "download corrupted");
}

#[tokio::test]
async fn eight_mib_each_way_at_once_through_an_echo() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    let stream = tunnel(proxy.addr(), &echo.to_string()).await;
    let (mut r, mut w) = stream.into_split();
    let data = pattern(EIGHT_MIB, 2);
    let expected = Fnv::of(&data);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Fnv::default();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.write(&buf[..n]);
    }
    writer.await.unwrap();
    assert_eq!((got.len, got.hash), (expected.len, expected.hash));
}

#[tokio::test]
async fn bytes_sent_with_the_connect_head_are_not_lost() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    // 100 KiB of early data in the same write as the head: more than one read of the head
    // reader, so part of it is still in the socket when the tunnel starts.
    let early = pattern(100 * 1024, 3);
    let mut request = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").into_bytes();
    request.extend_from_slice(&early);
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(&request).await.unwrap();
    assert_eq!(read_head(&mut stream).await, established());
    let mut echoed = vec![0; early.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    assert!(echoed == early, "early data was corrupted or reordered");
}

#[tokio::test]
async fn a_tiny_early_write_is_not_lost() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!("CONNECT {echo} HTTP/1.1\r\n\r\nhello");
    stream.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_head(&mut stream).await, established());
    let mut echoed = [0; 5];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
}

#[tokio::test]
async fn upstream_half_close_reaches_the_client_while_the_client_keeps_sending() {
    // The origin says "bye", closes its sending side, then counts what the client still sends.
    let (counted_tx, mut counted_rx) = tokio::sync::mpsc::unbounded_channel();
    let origin = serve("127.0.0.1:0", move |mut stream| {
        let counted_tx = counted_tx.clone();
        async move {
            stream.write_all(b"bye").await.unwrap();
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            counted_tx.send(rest).unwrap();
        }
    })
    .await;
    let proxy = Proxy::start(&open_config(""));
    let mut stream = tunnel(proxy.addr(), &origin.to_string()).await;
    let mut greeting = Vec::new();
    stream.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(
        greeting, b"bye",
        "the client must see EOF after the origin's FIN"
    );
    let late = pattern(300 * 1024, 4);
    stream.write_all(&late).await.unwrap();
    stream.shutdown().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(10), counted_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(received == late, "bytes after the upstream's FIN were lost");
}

#[tokio::test]
async fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let origin = serve("127.0.0.1:0", |stream| async move {
        let mut stream = stream;
        let mut first = [0; 1];
        let _ = stream.read_exact(&mut first).await;
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream); // RST
    })
    .await;
    let proxy = Proxy::start(&open_config(""));
    let mut stream = tunnel(proxy.addr(), &origin.to_string()).await;
    stream.write_all(b"x").await.unwrap();
    let mut buf = [0; 16];
    let result = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap();
    match result {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes (a clean close hides the failure)"),
    }
}

#[tokio::test]
async fn ipv6_listener_and_target() {
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    };
    drop(listener);
    let echo = serve("[::1]:0", |mut stream| async move {
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await;
    let proxy = Proxy::start(
        "server { listen [::1]:0; proxy_connect; proxy_connect_allow all; destination_allow ::1; }",
    );
    assert!(proxy.addr().is_ipv6());
    let mut stream = tunnel(proxy.addr(), &format!("[::1]:{}", echo.port())).await;
    stream.write_all(b"over v6").await.unwrap();
    let mut buf = [0; 7];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"over v6");
}

#[tokio::test]
async fn a_hundred_concurrent_tunnels_each_keep_their_own_bytes() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(""));
    let mut tasks = Vec::new();
    for seed in 0..100u64 {
        let proxy_addr = proxy.addr();
        tasks.push(tokio::spawn(async move {
            let mut stream = tunnel(proxy_addr, &echo.to_string()).await;
            let data = pattern(64 * 1024, 100 + seed);
            let (mut r, mut w) = stream.split();
            let (written, echoed) = tokio::join!(
                async {
                    w.write_all(&data).await.unwrap();
                    w.shutdown().await.unwrap();
                },
                async {
                    let mut echoed = Vec::new();
                    r.read_to_end(&mut echoed).await.unwrap();
                    echoed
                }
            );
            let () = written;
            assert!(echoed == data, "tunnel {seed} got someone else's bytes");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_the_data_timeout() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config("proxy_connect_data_timeout 2s;"));
    let mut stream = tunnel(proxy.addr(), &echo.to_string()).await;
    // Activity keeps it open past the timeout (a byte every half second: a loaded machine
    // may be late by most of the rest)...
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(b"k").await.unwrap();
        let mut byte = [0; 1];
        stream.read_exact(&mut byte).await.unwrap();
    }
    // ...silence closes it.
    let mut buf = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(2) + LATENESS, stream.read(&mut buf))
        .await
        .expect("the idle tunnel was not closed");
    assert!(matches!(read, Ok(0) | Err(_)));
}

#[tokio::test]
async fn proxy_connect_response_expands_its_variables() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(
        r#"proxy_connect_response "HTTP/1.1 200 OK\r\nX-Target: $connect_host:$connect_port\r\nX-Addr: ${connect_addr}\r\n\r\n";"#,
    ));
    let target = format!("localhost:{}", echo.port());
    let (_stream, head) = connect(proxy.addr(), &target).await;
    let addr_line = format!("X-Addr: {echo}\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert!(
        head.contains(&format!("X-Target: {target}\r\n")),
        "{head:?}"
    );
    assert!(head.contains(&addr_line), "{head:?}");
}

#[tokio::test]
async fn proxy_connect_address_overrides_the_destination() {
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config(&format!("proxy_connect_address {echo};")));
    // 192.0.2.1 (TEST-NET-1) would never answer; the override sends the tunnel to the echo.
    let mut stream = tunnel(proxy.addr(), "192.0.2.1:443").await;
    stream.write_all(b"redirected").await.unwrap();
    let mut buf = [0; 10];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"redirected");
}

#[tokio::test]
async fn proxy_connect_bind_sets_the_source_address() {
    // The origin tells each client which address it came from.
    let origin = serve("127.0.0.1:0", |mut stream| async move {
        let peer = stream.peer_addr().unwrap().ip().to_string();
        let _ = stream.write_all(peer.as_bytes()).await;
    })
    .await;
    let proxy = Proxy::start(&open_config("proxy_connect_bind 127.0.0.2;"));
    let mut stream = tunnel(proxy.addr(), &origin.to_string()).await;
    let mut seen = String::new();
    stream.read_to_string(&mut seen).await.unwrap();
    assert_eq!(seen, "127.0.0.2");
}

#[tokio::test]
async fn each_server_block_applies_its_own_policy() {
    let echo = echo_server().await;
    let proxy = Proxy::start_with(
        "server { listen 127.0.0.1:0; proxy_connect; proxy_connect_allow all; destination_allow 127.0.0.1; }\n\
         server { listen 127.0.0.1:0; proxy_connect; }\n",
        2,
    );
    tunnel(proxy.addrs[0], &echo.to_string()).await;
    let (_stream, head) = connect(proxy.addrs[1], &echo.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");
}
