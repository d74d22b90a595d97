//! `worker_processes`: the real binary serves connections on that many worker threads, each
//! with its own event loop and its own idle upstream connections.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A proxy forwarding plain HTTP to loopback origins, under these top-level directives.
fn forwarding(top: &str) -> String {
    format!(
        "{top}\nserver {{\n    listen 127.0.0.1:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    \
         destination_allow 127.0.0.0/8;\n    \
         location / {{ proxy_pass http://$http_host$request_uri; }}\n}}\n"
    )
}

/// The names of the threads of process `pid` that serve connections, once there are
/// `expected` of them (a thread names itself once it runs), or after [`PATIENCE`].
async fn worker_threads(pid: u32, expected: usize) -> Vec<String> {
    let found = eventually(async || {
        let names = named_workers(pid);
        (names.len() == expected).then_some(names)
    })
    .await;
    found.unwrap_or_else(|| named_workers(pid))
}

fn named_workers(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("sluice-worker"))
        .collect();
    names.sort();
    names
}

/// The path of a recorded request (its second word).
fn path(request: &Recorded) -> &str {
    request.head.split(' ').nth(1).unwrap_or("")
}

/// Sends `requests` GETs for `/n` on one keep-alive connection and checks each answer.
async fn get_several(proxy: std::net::SocketAddr, origin: std::net::SocketAddr, requests: usize) {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let mut buf = Vec::new();
    for n in 0..requests {
        let request = format!("GET http://{origin}/{n} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let (status, _, body) = tokio::time::timeout(
            Duration::from_secs(10),
            read_response(&mut client, &mut buf, false),
        )
        .await
        .expect("an answer within 10 s")
        .expect("a whole response");
        assert_eq!(status, 200);
        assert_eq!(body, format!("/{n}").as_bytes());
    }
}

#[tokio::test]
async fn worker_processes_sets_the_threads_that_serve_connections() {
    let origin = Origin::start(|r| ok(path(r).as_bytes())).await;
    let proxy = Proxy::start(&forwarding("worker_processes 3;"));
    assert_eq!(
        worker_threads(proxy.pid(), 3).await,
        ["sluice-worker-0", "sluice-worker-1", "sluice-worker-2"]
    );
    // Many clients at once, spread over the workers, each served to its last request.
    let clients: Vec<_> = (0..12)
        .map(|_| tokio::spawn(get_several(proxy.addr(), origin.addr, 5)))
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(origin.recorded().len(), 60);
    // A connection kept by one worker serves that worker's next requests: 12 clients, one
    // request in flight each, need at most 12 upstream connections.
    let opened = origin.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(opened <= 12, "{opened} upstream connections for 12 clients");
}

#[tokio::test]
async fn worker_processes_auto_runs_one_worker_per_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    for config in [forwarding("worker_processes auto;"), forwarding("")] {
        let proxy = Proxy::start(&config);
        assert_eq!(
            worker_threads(proxy.pid(), cores).await.len(),
            cores,
            "{config}"
        );
    }
}

#[tokio::test]
async fn a_reload_keeps_the_workers_and_says_the_new_count_needs_a_restart() {
    let origin = Origin::start(|r| ok(path(r).as_bytes())).await;
    let proxy = Proxy::start(&forwarding("worker_processes 2;"));
    std::fs::write(proxy.config_path(), forwarding("worker_processes 4;")).unwrap();
    assert!(sighup(&proxy).await.contains("reloaded "));
    proxy
        .wait_for_log("worker_processes changed: it takes effect at the next start")
        .await;
    assert_eq!(worker_threads(proxy.pid(), 2).await.len(), 2);
    get_several(proxy.addr(), origin.addr, 2).await;
}

#[tokio::test]
async fn a_worker_keeps_an_idle_upstream_connection_for_each_of_many_clients() {
    let origin = Origin::start(|r| ok(path(r).as_bytes())).await;
    let proxy = Proxy::start(&forwarding("worker_processes 1;"));
    const CLIENTS: usize = 40;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let (proxy_addr, origin_addr) = (proxy.addr(), origin.addr);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = std::sync::Arc::clone(&barrier);
            tokio::spawn(async move {
                let mut client = TcpStream::connect(proxy_addr).await.unwrap();
                let mut buf = Vec::new();
                // Rounds in lockstep: between them every upstream connection is idle at once.
                for n in 0..3 {
                    barrier.wait().await;
                    let request =
                        format!("GET http://{origin_addr}/{n} HTTP/1.1\r\nHost: x\r\n\r\n");
                    client.write_all(request.as_bytes()).await.unwrap();
                    let answer = tokio::time::timeout(
                        Duration::from_secs(10),
                        read_response(&mut client, &mut buf, false),
                    )
                    .await
                    .expect("an answer within 10 s");
                    assert_eq!(answer.expect("a whole response").0, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let opened = origin.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opened <= CLIENTS,
        "{opened} upstream connections for {CLIENTS} clients: idle ones were dropped"
    );
}
