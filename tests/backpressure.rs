//! Backpressure: a peer that stops reading must stall the sender, not make sluice buffer.
//!
//! Each test opens several connections through the real binary whose receiving side stops
//! reading, lets the sending side push as fast as it can, and waits until the sender is
//! stalled (its byte count stops moving). Then: the sender is stalled well before the end of
//! its data; sluice's resident memory grew by at most a few buffers per connection (a tunnel
//! moves bytes through a kernel pipe on Linux, else one 32 KiB buffer each way); and when the
//! reader resumes, every byte
//! arrives intact.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

/// Connections stalled at once in each test.
const CONNECTIONS: usize = 8;
/// What each sender tries to push: far more than the socket buffers in between can hold.
const TOTAL: usize = 48 << 20;
/// The growth of sluice's RSS allowed per stalled connection: its 32 KiB buffers and
/// bookkeeping (4 × 32 KiB in all). Buffering the stream would be megabytes.
const PER_CONNECTION: u64 = 128 * 1024;

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Waits until every counter has stopped moving for `quiet`; returns their totals.
async fn wait_for_stall(counters: &[Arc<AtomicU64>], quiet: Duration) -> Vec<u64> {
    let read = || -> Vec<u64> { counters.iter().map(|c| c.load(Ordering::SeqCst)).collect() };
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut last = read();
    let mut still_since = Instant::now();
    loop {
        sleep(Duration::from_millis(100)).await;
        let now = read();
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= quiet && last.iter().all(|&n| n > 0) {
            return last;
        }
        assert!(
            Instant::now() < give_up,
            "the senders never stalled: {last:?}"
        );
    }
}

/// Sends `data` to `stream`, counting what the socket took; then closes its sending side if
/// `close`.
async fn counted_write(
    mut stream: impl AsyncWriteExt + Unpin,
    data: Arc<Vec<u8>>,
    sent: Arc<AtomicU64>,
    close: bool,
) {
    for chunk in data.chunks(16 * 1024) {
        if stream.write_all(chunk).await.is_err() {
            return;
        }
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    if close {
        let _ = stream.shutdown().await;
    }
}

/// Reads exactly `expected.len()` bytes and insists they are `expected`.
async fn read_and_compare(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0; expected.len()];
    tokio::time::timeout(Duration::from_secs(60), stream.read_exact(&mut got))
        .await
        .expect("the stalled stream resumes")
        .expect("every byte arrives");
    assert!(
        got == expected,
        "bytes changed while the reader was stalled"
    );
}

/// A proxy that has served one tunnel already, so one-time allocations are behind us.
async fn warm_proxy() -> Proxy {
    let proxy = Proxy::start(&open_config(
        "    proxy_connect_data_timeout 5m;\n    \
         location / { proxy_pass http://$http_host$request_uri; }",
    ));
    let echo = echo_server().await;
    let mut stream = tunnel(proxy.addr(), &echo.to_string()).await;
    stream.write_all(b"warm").await.unwrap();
    let mut buf = [0; 4];
    stream.read_exact(&mut buf).await.unwrap();
    drop(stream);
    sleep(Duration::from_millis(200)).await;
    proxy
}

fn check_memory(proxy: &Proxy, before: u64, what: &str) {
    let after = rss(proxy.pid());
    let growth = after.saturating_sub(before);
    eprintln!(
        "{what}: sluice RSS {} KiB before, {} KiB with {CONNECTIONS} stalled ({} KiB per connection)",
        before / 1024,
        after / 1024,
        growth / 1024 / CONNECTIONS as u64
    );
    assert!(
        growth <= PER_CONNECTION * CONNECTIONS as u64,
        "{what}: sluice grew by {growth} bytes for {CONNECTIONS} stalled connections"
    );
}

/// Each sender stopped before the end of its data. How far it got depends on the kernel's
/// socket buffers between it and the reader (receive buffers autotune up to `tcp_rmem`'s
/// maximum, 32 MiB on some machines), not on sluice: its own share is the memory check.
fn check_stalled(totals: &[u64], what: &str) {
    eprintln!("{what}: senders stalled after {totals:?} bytes of {TOTAL}");
    for &n in totals {
        assert!(
            n < TOTAL as u64,
            "{what}: a sender pushed {n} of {TOTAL} bytes to a reader that reads nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stalls_the_origin_of_its_tunnel() {
    let proxy = warm_proxy().await;
    let data = Arc::new(pattern(TOTAL, 11));
    let counters: Vec<Arc<AtomicU64>> = (0..CONNECTIONS).map(|_| Arc::default()).collect();
    let next = Arc::new(AtomicU64::new(0));
    let origin = {
        let (data, counters, next) = (data.clone(), counters.clone(), next.clone());
        serve("127.0.0.1:0", move |stream| {
            let i = next.fetch_add(1, Ordering::SeqCst) as usize;
            counted_write(stream, data.clone(), counters[i].clone(), true)
        })
        .await
    };
    let before = rss(proxy.pid());
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        // Opened one by one so the origin's connection order matches the counters'.
        clients.push(tunnel(proxy.addr(), &origin.to_string()).await);
        while (next.load(Ordering::SeqCst) as usize) < clients.len() {
            sleep(Duration::from_millis(5)).await;
        }
    }
    let totals = wait_for_stall(&counters, Duration::from_secs(1)).await;
    check_stalled(&totals, "tunnel, client not reading");
    check_memory(&proxy, before, "tunnel, client not reading");
    for client in &mut clients {
        read_and_compare(client, &data).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_stops_reading_stalls_the_client_of_its_tunnel() {
    let proxy = warm_proxy().await;
    // Accepts, reads nothing until told to, then checks everything it was sent.
    let resume = Arc::new(tokio::sync::Notify::new());
    let verified = Arc::new(AtomicU64::new(0));
    let data = Arc::new(pattern(TOTAL, 12));
    let origin = {
        let (resume, verified, data) = (resume.clone(), verified.clone(), data.clone());
        serve("127.0.0.1:0", move |mut stream| {
            let (resume, verified, data) = (resume.clone(), verified.clone(), data.clone());
            async move {
                resume.notified().await;
                read_and_compare(&mut stream, &data).await;
                verified.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await
    };
    let before = rss(proxy.pid());
    let counters: Vec<Arc<AtomicU64>> = (0..CONNECTIONS).map(|_| Arc::default()).collect();
    let mut writers = Vec::new();
    for counter in &counters {
        let stream = tunnel(proxy.addr(), &origin.to_string()).await;
        writers.push(tokio::spawn(counted_write(
            stream,
            data.clone(),
            counter.clone(),
            true,
        )));
    }
    let totals = wait_for_stall(&counters, Duration::from_secs(1)).await;
    check_stalled(&totals, "tunnel, origin not reading");
    check_memory(&proxy, before, "tunnel, origin not reading");
    let give_up = Instant::now() + Duration::from_secs(60);
    while verified.load(Ordering::SeqCst) < CONNECTIONS as u64 {
        resume.notify_waiters();
        assert!(
            Instant::now() < give_up,
            "the stalled uploads did not complete"
        );
        sleep(Duration::from_millis(50)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// An origin that answers every request with a `TOTAL`-byte body, counting what it sent.
async fn big_response_origin(data: Arc<Vec<u8>>, counters: Vec<Arc<AtomicU64>>) -> SocketAddr {
    let next = Arc::new(AtomicU64::new(0));
    serve("127.0.0.1:0", move |mut stream| {
        let (data, counter) = (
            data.clone(),
            counters[next.fetch_add(1, Ordering::SeqCst) as usize].clone(),
        );
        async move {
            if read_request_head(&mut stream).await.is_none() {
                return;
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len());
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            counted_write(stream, data, counter, true).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_forwarded_response_stalls_the_origin() {
    let proxy = warm_proxy().await;
    let data = Arc::new(pattern(TOTAL, 13));
    let counters: Vec<Arc<AtomicU64>> = (0..CONNECTIONS).map(|_| Arc::default()).collect();
    let origin = big_response_origin(data.clone(), counters.clone()).await;
    let before = rss(proxy.pid());
    let mut clients = Vec::new();
    for counter in &counters {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let request = format!("GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
        clients.push(stream);
        // One origin connection per request, in order, so the counters line up.
        while counter.load(Ordering::SeqCst) == 0 {
            sleep(Duration::from_millis(5)).await;
        }
    }
    let totals = wait_for_stall(&counters, Duration::from_secs(1)).await;
    check_stalled(&totals, "forwarded response, client not reading");
    check_memory(&proxy, before, "forwarded response, client not reading");
    for client in &mut clients {
        read_and_compare(client, &data).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_stops_reading_a_request_body_stalls_the_client() {
    let proxy = warm_proxy().await;
    let data = Arc::new(pattern(TOTAL, 14));
    let resume = Arc::new(tokio::sync::Notify::new());
    let verified = Arc::new(AtomicU64::new(0));
    let origin = {
        let (resume, verified, data) = (resume.clone(), verified.clone(), data.clone());
        serve("127.0.0.1:0", move |mut stream| {
            let (resume, verified, data) = (resume.clone(), verified.clone(), data.clone());
            async move {
                if read_request_head(&mut stream).await.is_none() {
                    return;
                }
                resume.notified().await;
                read_and_compare(&mut stream, &data).await;
                let _ = stream.write_all(&ok(b"done")).await;
                verified.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await
    };
    let before = rss(proxy.pid());
    let counters: Vec<Arc<AtomicU64>> = (0..CONNECTIONS).map(|_| Arc::default()).collect();
    let mut writers = Vec::new();
    for counter in &counters {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let head = format!(
            "POST http://{origin}/up HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {TOTAL}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (read_half, mut write_half) = stream.into_split();
        let (data, counter) = (data.clone(), counter.clone());
        writers.push((
            read_half,
            tokio::spawn(async move {
                counted_write(&mut write_half, data, counter, false).await;
                // Kept open until the answer: a half-close would tell sluice that the client
                // left (as nginx takes it), and end the request.
                write_half
            }),
        ));
    }
    let totals = wait_for_stall(&counters, Duration::from_secs(1)).await;
    check_stalled(&totals, "request body, origin not reading");
    check_memory(&proxy, before, "request body, origin not reading");
    let give_up = Instant::now() + Duration::from_secs(60);
    while verified.load(Ordering::SeqCst) < CONNECTIONS as u64 {
        resume.notify_waiters();
        assert!(
            Instant::now() < give_up,
            "the stalled uploads did not complete"
        );
        sleep(Duration::from_millis(50)).await;
    }
    for (mut read_half, writer) in writers {
        let _open = writer.await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0; 256];
        while !answer.ends_with(b"done") {
            let n = read_half.read(&mut buf).await.unwrap();
            assert!(n > 0, "{:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 "));
    }
}
