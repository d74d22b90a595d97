//! Password files and password checks through the real binary: every htpasswd format nginx
//! accepts on Linux logs in through a real CONNECT, a line sluice cannot use is a warning
//! naming `file:line` (the rest of the file still works), and a flood of wrong passwords
//! neither multiplies threads nor keeps a right password out.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Starts sluice with `users` as its `auth_basic_user_file`.
fn proxy_with_users(users: &str) -> (Proxy, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join("users");
    std::fs::write(&path, users).unwrap();
    let proxy = Proxy::start(&open_config(&format!(
        "    auth_basic \"sluice test\";\n    auth_basic_user_file {};",
        path.display()
    )));
    (proxy, dir)
}

/// The status line of a CONNECT to `target` with these credentials, from `source` if given.
async fn connect_as(
    proxy: SocketAddr,
    target: SocketAddr,
    user: &str,
    password: &str,
    source: Option<&str>,
) -> String {
    let mut stream = match source {
        Some(source) => {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            socket.connect(proxy).await.unwrap()
        }
        None => TcpStream::connect(proxy).await.unwrap(),
    };
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
        basic(user, password)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    head.lines().next().unwrap_or_default().to_string()
}

/// "secret" in every format, made by other tools: `openssl passwd -1/-apr1/-5/-6`, Python's
/// hashlib for {SHA}/{SSHA}, Python's bcrypt for the `$2?$` lines; then lines nginx would
/// not accept either (garbage, a DES crypt(3) hash), which must not stop the rest.
const MIXED: &str = "\
one:$1$saltsalt$9xy1btjgzLYfb7hivXtC//
amy:$apr1$MsHVxMyB$6JwV36VuoPpYZGjFzjFSm1
fay:$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA
six:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1
sis:$6$rounds=12000$x$w4oNv2MwswYOX/146kw00kwzC97j2dA6gfQJohoaFzJolbNzv9S9F6UgGSPYx2aBqFDWvLpzpYYq/8c8Sqq6w0
ada:$2a$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
ann:$2b$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
bob:$2y$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
sam:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
sue:{SSHA}ixl/qVz8jXI9KzaHTHoYHpe2/jhwZXBwZXIxMg==
pat:{PLAIN}secret
bad:!!garbage!!
des:abNANd1rDfiNc
";

#[tokio::test]
async fn every_hash_format_logs_in_and_an_unusable_line_is_only_a_warning() {
    let echo = echo_server().await;
    // And one made by the bcrypt crate at test time.
    let made = bcrypt::hash("secret", 4).unwrap();
    let (proxy, dir) = proxy_with_users(&format!("{MIXED}new:{made}\n"));
    let file = dir.0.join("users").display().to_string();
    for (line, why) in [
        (
            12,
            "user \"bad\" cannot log in: unknown password hash format",
        ),
        (
            13,
            "user \"des\" cannot log in: DES crypt(3) hash not supported",
        ),
    ] {
        let warning = proxy.wait_for_log(&format!(" in {file}:{line}")).await;
        assert!(warning.contains(why), "{warning}");
        assert!(warning.contains("WARN"), "{warning}");
    }
    for user in [
        "one", "amy", "fay", "six", "sis", "ada", "ann", "bob", "sam", "sue", "pat", "new",
    ] {
        let status = connect_as(proxy.addr(), echo, user, "secret", None).await;
        assert!(status.starts_with("HTTP/1.1 200 "), "{user}: {status}");
        let status = connect_as(proxy.addr(), echo, user, "Secret", None).await;
        assert!(status.starts_with("HTTP/1.1 407 "), "{user}: {status}");
    }
    for user in ["bad", "des", "nobody"] {
        let status = connect_as(proxy.addr(), echo, user, "secret", None).await;
        assert!(status.starts_with("HTTP/1.1 407 "), "{user}: {status}");
    }
}

/// The same, with hashes openssl makes now (a random salt each run).
#[tokio::test]
async fn hashes_made_by_openssl_now_log_in() {
    if !require_tool("openssl") {
        return;
    }
    let echo = echo_server().await;
    let password = format!("pw-{}", std::process::id());
    let mut users = String::new();
    for (user, scheme) in [
        ("md5", "-1"),
        ("apr", "-apr1"),
        ("s256", "-5"),
        ("s512", "-6"),
    ] {
        let out = Command::new("openssl")
            .args(["passwd", scheme, &password])
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl passwd {scheme} failed");
        let hash = String::from_utf8(out.stdout).unwrap();
        users.push_str(&format!("{user}:{}\n", hash.trim()));
    }
    let (proxy, _dir) = proxy_with_users(&users);
    for user in ["md5", "apr", "s256", "s512"] {
        let status = connect_as(proxy.addr(), echo, user, &password, None).await;
        assert!(
            status.starts_with("HTTP/1.1 200 "),
            "{user}: {status}\n{users}"
        );
        let status = connect_as(proxy.addr(), echo, user, "wrong", None).await;
        assert!(status.starts_with("HTTP/1.1 407 "), "{user}: {status}");
    }
}

/// The `Threads:` line of /proc/PID/status.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_wrong_passwords_takes_few_threads_and_lets_a_right_one_in() {
    const FLOOD: usize = 250;
    const MOST_THREADS: usize = 64;
    let echo = echo_server().await;
    let hash = bcrypt::hash("right", 8).unwrap();
    let (proxy, _dir) = proxy_with_users(&format!("kim:{hash}\nlee:{hash}\n"));

    // kim logs in once before the flood: her next connection is answered from memory.
    let status = connect_as(proxy.addr(), echo, "kim", "right", None).await;
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");

    // Every guess different, so nothing is remembered; all from one address.
    let mut flood = Vec::new();
    for guess in 0..FLOOD {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let request = format!(
            "CONNECT {echo} HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
            basic("lee", &format!("guess-{guess}"))
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        flood.push(stream);
    }

    // While the guesses are being checked: the thread count stays small…
    let mut most = 0;
    for _ in 0..50 {
        most = most.max(threads(proxy.pid()));
        if most > MOST_THREADS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        most <= MOST_THREADS,
        "{most} threads for {FLOOD} password checks"
    );

    // …and the right passwords get in: lee's first try from another address, and kim's
    // remembered one from the flooding address itself. Liveness bounds, not speed.
    let liveness = Duration::from_secs(5);
    let fresh = tokio::time::timeout(
        liveness,
        connect_as(proxy.addr(), echo, "lee", "right", Some("127.0.0.2")),
    )
    .await
    .expect("a right password waited behind the flood");
    assert!(fresh.starts_with("HTTP/1.1 200 "), "{fresh}");
    let remembered = tokio::time::timeout(
        liveness,
        connect_as(proxy.addr(), echo, "kim", "right", None),
    )
    .await
    .expect("remembered credentials waited behind the flood");
    assert!(remembered.starts_with("HTTP/1.1 200 "), "{remembered}");
    assert!(threads(proxy.pid()) <= MOST_THREADS);
    drop(flood);
}

#[tokio::test]
async fn a_repeated_wrong_password_is_refused_from_memory() {
    let echo = echo_server().await;
    let hash = bcrypt::hash("right", 4).unwrap();
    let (proxy, _dir) = proxy_with_users(&format!("kim:{hash}\n"));
    for _ in 0..2 {
        let status = connect_as(proxy.addr(), echo, "kim", "wrong", None).await;
        assert!(status.starts_with("HTTP/1.1 407 "), "{status}");
    }
    proxy
        .wait_for_log("a password already refused for \"kim\", refused again")
        .await;
}
