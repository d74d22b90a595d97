//! Scale-out behind a real load balancer: Debian's `haproxy`, run in the foreground as this
//! test's child, in TCP mode in front of two sluice instances (one fed `send-proxy-v2`, one
//! `send-proxy`), health-checked on their `status_listen` `/healthz`. Clients bound to
//! 127.0.0.2 and 127.0.0.3 reach each instance's `allow` rules and access log under their own
//! address; a SIGQUIT to one instance lets its open tunnel finish while every new client is
//! served by the other. docs/scale-out.md shows the same HAProxy configuration.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// HAProxy running on a configuration, stopped by its PID when dropped.
struct Haproxy {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Haproxy {
    fn start(config: &Path) -> Haproxy {
        let mut child = Command::new("haproxy")
            .args(["-f", config.to_str().unwrap(), "-db"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    println!("haproxy: {line}");
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Haproxy { child, log }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A free loopback port for HAProxy's frontend (HAProxy binds the port it is given).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One sluice instance: PROXY headers from HAProxy (127.0.0.1) only, clients 127.0.0.2 and
/// 127.0.0.3 allowed, tunnels dialled from `bind` so the origin can tell the instances apart.
fn instance(log: &Path, bind: &str) -> Proxy {
    Proxy::start(&format!(
        "status_listen 127.0.0.1:0;\n\
         log_format who '$remote_addr|$proxy_protocol_addr|$realip_remote_addr|$status';\n\
         server {{\n    listen 127.0.0.1:0 proxy_protocol;\n    set_real_ip_from 127.0.0.1;\n    \
         real_ip_header proxy_protocol;\n    allow 127.0.0.2;\n    allow 127.0.0.3;\n    deny all;\n    \
         proxy_connect;\n    proxy_connect_allow all;\n    proxy_connect_bind {bind};\n    \
         destination_allow 127.0.0.0/8;\n    access_log {} who;\n}}\n",
        log.display()
    ))
}

/// A CONNECT to `target` through `balancer` from the local address `source`; the answer head.
async fn connect_from(
    source: &str,
    balancer: SocketAddr,
    target: SocketAddr,
) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(balancer).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    (stream, head)
}

/// Sends `bytes` into a tunnel to the echo server and reads them back.
async fn echo_round(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0; bytes.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("the echo came back in time")
        .unwrap();
    assert_eq!(back, bytes);
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn haproxy_spreads_clients_over_two_instances_and_drains_one() {
    if !require_tool("haproxy") {
        return;
    }
    // The origin: an echo server that records which instance dialled it.
    let dialled_from = Arc::new(Mutex::new(Vec::<SocketAddr>::new()));
    let seen = Arc::clone(&dialled_from);
    let echo = serve("127.0.0.1:0", move |mut stream| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(stream.peer_addr().unwrap());
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        }
    })
    .await;

    let dir = TempDir::new();
    let (log_a, log_b) = (dir.0.join("a.log"), dir.0.join("b.log"));
    let mut a = instance(&log_a, "127.0.0.5");
    let b = instance(&log_b, "127.0.0.6");
    let front: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.0.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    log stderr format raw local0 info\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 2s\n    \
             timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch 1\n\
             frontend proxy\n    bind {front}\n    default_backend sluice\n\
             backend sluice\n    balance roundrobin\n    option httpchk GET /healthz\n    \
             http-check expect status 200\n    default-server inter 200ms fall 1 rise 1\n    \
             server a {} send-proxy-v2 check port {}\n    \
             server b {} send-proxy check port {}\n",
            a.addr(),
            a.status_addr().port(),
            b.addr(),
            b.status_addr().port(),
        ),
    )
    .unwrap();
    let haproxy = Haproxy::start(&config);

    // Clients from 127.0.0.2 and 127.0.0.3, in turn, until each instance has logged both.
    let both = |text: &str| {
        text.contains("127.0.0.2|127.0.0.2|127.0.0.1|200")
            && text.contains("127.0.0.3|127.0.0.3|127.0.0.1|200")
    };
    // HAProxy is ready once its port accepts (a bounded wait on that condition).
    let mut ready = false;
    for _ in 0..200 {
        if TcpStream::connect(front).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        ready,
        "haproxy did not listen: {}",
        haproxy.log.lock().unwrap()
    );
    let mut served = 0;
    for round in 0..40 {
        if both(&log_text(&log_a)) && both(&log_text(&log_b)) {
            break;
        }
        let source = if round % 4 < 2 {
            "127.0.0.2"
        } else {
            "127.0.0.3"
        };
        let (mut stream, head) = connect_from(source, front, echo).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{source}: {head:?}");
        echo_round(&mut stream, source.as_bytes()).await;
        drop(stream);
        served += 1;
        // Wait for this tunnel's log line before the next client, so the loop ends exactly.
        for _ in 0..200 {
            let lines = log_text(&log_a).lines().count() + log_text(&log_b).lines().count();
            if lines >= served {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    println!("instance a log:\n{}", log_text(&log_a));
    println!("instance b log:\n{}", log_text(&log_b));
    assert!(both(&log_text(&log_a)), "a: {}", log_text(&log_a));
    assert!(both(&log_text(&log_b)), "b: {}", log_text(&log_b));

    // The instances' ACL sees the client, not HAProxy: 127.0.0.4 is denied on either.
    for _ in 0..2 {
        let (_stream, head) = connect_from("127.0.0.4", front, echo).await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{head:?}");
    }

    // A tunnel open on instance a (the origin sees a's bind address), then SIGQUIT to a.
    let mut open = None;
    for _ in 0..4 {
        let before = dialled_from.lock().unwrap().len();
        let (mut stream, head) = connect_from("127.0.0.2", front, echo).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "{head:?}");
        echo_round(&mut stream, b"which").await;
        let from = dialled_from.lock().unwrap()[before];
        if from.ip().to_string() == "127.0.0.5" {
            open = Some(stream);
            break;
        }
    }
    let mut open = open.expect("round robin gave instance a a tunnel");
    a.signal(libc::SIGQUIT);
    a.wait_for_log("SIGQUIT received: graceful shutdown").await;

    // New clients: every one is served, by instance b (HAProxy retries a refused connect on
    // the other server, and marks a down once its /healthz stops answering).
    let before = dialled_from.lock().unwrap().len();
    for round in 0..10 {
        let source = if round % 2 == 0 {
            "127.0.0.2"
        } else {
            "127.0.0.3"
        };
        let (mut stream, head) = connect_from(source, front, echo).await;
        assert!(
            head.starts_with("HTTP/1.1 200 "),
            "new client {round}: {head:?}"
        );
        echo_round(&mut stream, b"after").await;
    }
    let after: Vec<String> = dialled_from.lock().unwrap()[before..]
        .iter()
        .map(|a| a.ip().to_string())
        .collect();
    println!("new tunnels after SIGQUIT dialled from: {after:?}");
    assert!(after.iter().all(|ip| ip == "127.0.0.6"), "{after:?}");

    // The tunnel open on a still carries bytes both ways, and a exits once it ends.
    echo_round(&mut open, b"still open after SIGQUIT").await;
    drop(open);
    let status = a.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "instance a did not exit cleanly: {status:?}"
    );
    println!("instance a exited: {status:?}");
    haproxy
        .log
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.contains("is DOWN") || l.contains("is UP"))
        .for_each(|l| println!("haproxy state: {l}"));
}
