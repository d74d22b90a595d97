//! What a flood of connections costs the real binary: descriptors stay within
//! `max_connections` however many clients knock, a silent client connection costs a few KiB,
//! and idle connections cannot lock the status listener's `/healthz` out.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A proxy that forwards plain HTTP to loopback origins, under these top-level directives.
fn forwarding(top: &str) -> String {
    format!(
        "{top}\nserver {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8;\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n"
    )
}

/// Sets the open-file limit, soft and hard, of the process `pid` (one this test started).
fn limit_open_files(pid: u32, limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads the struct passed and writes nothing (no old-limit pointer).
    let done = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Descriptors open in the process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Resident memory of the process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits (bounded) until `pid` holds at least `count` descriptors.
async fn wait_for_open_files(pid: u32, count: usize) {
    let reached = eventually(async || (open_files(pid) >= count).then_some(())).await;
    assert!(
        reached.is_some(),
        "sluice holds {} descriptors, never {count}",
        open_files(pid)
    );
}

/// One forwarded GET on a keep-alive client connection: its status.
async fn get_through(client: &mut TcpStream, buf: &mut Vec<u8>, origin: SocketAddr) -> u16 {
    let request = format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), read_response(client, buf, false))
        .await
        .expect("an answer in time");
    response.expect("a response").0
}

/// Connects `count` clients that send nothing.
async fn silent_clients(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(TcpStream::connect(addr).await.unwrap());
    }
    clients
}

/// Past `max_connections` the proxy stops accepting: a burst of clients far beyond its
/// descriptors waits in the kernel's backlog instead of being accepted (and held in a 503's
/// lingering close) until the process runs out of descriptors and its admitted clients'
/// requests fail with `502 too many open files`.
#[tokio::test]
async fn a_burst_past_max_connections_leaves_admitted_clients_their_descriptors() {
    let origin = Origin::start(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec()
    })
    .await;
    let proxy = Proxy::start(&forwarding("max_connections 64;"));
    limit_open_files(proxy.pid(), 256);

    // Admitted before the burst; each request dials the origin anew (it closes after one).
    let mut admitted = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(get_through(&mut admitted, &mut buf, origin.addr).await, 200);

    let burst = silent_clients(proxy.addr(), 600).await;
    // The proxy has taken what it will of the burst (the rest of its places at least).
    wait_for_open_files(proxy.pid(), 64).await;
    for round in 0..5 {
        assert_eq!(
            get_through(&mut admitted, &mut buf, origin.addr).await,
            200,
            "request {round} during the burst; sluice holds {} descriptors",
            open_files(proxy.pid())
        );
    }
    assert!(
        open_files(proxy.pid()) < 200,
        "{} descriptors held for 64 connections",
        open_files(proxy.pid())
    );
    drop(burst);

    // The backlog drains (each queued client has gone), and new clients are served again.
    let mut served = false;
    for _ in 0..100 {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = Vec::new();
        if get_through(&mut client, &mut buf, origin.addr).await == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "no client was served after the burst");
}

/// An idle listener holds no place: with two listeners and `max_connections 2`, two clients
/// of the same listener are both served.
#[tokio::test]
async fn an_idle_listener_holds_no_place() {
    let echo = echo_server().await;
    let config = "max_connections 2;\nserver {\n    listen 127.0.0.1:0;\n    listen 127.0.0.1:0;\n    \
                  proxy_connect;\n    proxy_connect_allow all;\n    destination_allow 127.0.0.0/8;\n}\n";
    let proxy = Proxy::start_with(config, 2);
    let _first = tunnel(proxy.addrs[0], &echo.to_string()).await;
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        tunnel(proxy.addrs[0], &echo.to_string()),
    )
    .await;
    assert!(
        second.is_ok(),
        "the second place is held by the idle listener"
    );
}

/// Clients over `max_connections_per_client` cannot wait in the backlog (it does not know
/// clients), so they are refused; but only a bounded number at a time get a 503 and its
/// lingering close (each holds a descriptor): the rest are closed at once.
#[tokio::test]
async fn refusals_past_max_connections_per_client_are_bounded() {
    const CLIENTS: usize = 300;
    let echo = echo_server().await;
    let proxy = Proxy::start(&open_config("    max_connections_per_client 1;"));
    let _held = tunnel(proxy.addr(), &echo.to_string()).await;
    let mut refused = silent_clients(proxy.addr(), CLIENTS).await;
    let (mut answered, mut closed) = (0, 0);
    for client in &mut refused {
        match read_to_close(client).await.status {
            503 => answered += 1,
            0 => closed += 1,
            other => panic!("status {other}"),
        }
    }
    assert!(answered > 0, "no client got a 503");
    assert!(
        closed > 0 && answered < CLIENTS,
        "all {CLIENTS} refused clients were answered and held in a lingering close"
    );
}

/// A client connection that has sent nothing holds no read buffer: thousands of them cost a
/// few KiB each (the target is 8 KiB; a 16 KiB buffer taken at accept made it 24 KiB).
#[tokio::test]
async fn a_silent_client_connection_costs_a_few_kib() {
    const CLIENTS: usize = 2000;
    let proxy = Proxy::start(&forwarding(""));
    let pid = proxy.pid();
    let before = rss_kib(pid);
    let files = open_files(pid);

    let mut clients = silent_clients(proxy.addr(), CLIENTS).await;
    wait_for_open_files(pid, files + CLIENTS).await;
    let silent = rss_kib(pid);
    let per_silent = (silent.saturating_sub(before)) as f64 / CLIENTS as f64;

    // One byte each, as a slowloris sends: now each holds a first, small buffer.
    for client in &mut clients {
        client.write_all(b"G").await.unwrap();
    }
    let mut per_byte = 0.0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = rss_kib(pid);
        per_byte = (now.saturating_sub(before)) as f64 / CLIENTS as f64;
        if per_byte >= per_silent + 1.0 {
            break;
        }
    }
    eprintln!(
        "RSS per client connection: {per_silent:.1} KiB silent, {per_byte:.1} KiB after one byte"
    );
    assert!(
        per_silent <= 12.0,
        "{per_silent:.1} KiB per silent connection"
    );
    assert!(
        per_byte <= 16.0,
        "{per_byte:.1} KiB per connection after one byte"
    );
}

/// Idle connections to `status_listen`, more than it serves at once, do not keep `/healthz`
/// from answering: a load balancer would take the proxy out.
#[tokio::test]
async fn idle_connections_cannot_lock_healthz_out() {
    let proxy = Proxy::start(&format!("status_listen 127.0.0.1:0;\n{}", open_config("")));
    let status = proxy.status_addr();
    for idle in [20, 100] {
        let _silent = silent_clients(status, idle).await;
        let health = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(status, b"GET /healthz HTTP/1.1\r\nHost: s\r\n\r\n"),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer with {idle} idle connections open"));
        assert_eq!(health.status, 200, "{idle} idle: {}", health.head);
    }
}
