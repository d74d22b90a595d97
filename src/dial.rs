//! Connecting upstream: Happy Eyeballs (RFC 8305) over the resolved addresses, all within one
//! deadline.
//!
//! The addresses are interleaved by family, starting with the family of the first one. The
//! first attempt starts at once; each next one starts [`ATTEMPT_DELAY`] after the one before,
//! or as soon as an attempt fails, while the earlier ones stay open. The first connection
//! wins and the others are dropped. No connection within `proxy_connect_connect_timeout`
//! (all attempts together) → `504`; every address refused or unreachable → `502`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::deadline;
use crate::error::ProxyError;

/// RFC 8305's Connection Attempt Delay: how long an attempt has before the next one starts.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// How to dial: the overall time allowed and an optional source address.
#[derive(Debug, Clone, Copy)]
pub struct DialOptions {
    /// `proxy_connect_connect_timeout`: the bound on all attempts together.
    pub timeout: Duration,
    /// `proxy_connect_bind`.
    pub bind: Option<IpAddr>,
}

/// Connects to the first of `addrs` that accepts; returns the connection and the address it
/// reached. `shown` names the destination in errors (`example.org:443`). Refused or
/// unreachable everywhere → 502; out of time → 504.
pub async fn dial(
    addrs: &[SocketAddr],
    shown: &str,
    options: DialOptions,
) -> Result<(TcpStream, SocketAddr), ProxyError> {
    let started = Instant::now();
    let deadline = deadline::after(started, options.timeout);
    // A source address of the other family cannot reach an address.
    let usable: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|addr| {
            options
                .bind
                .is_none_or(|bind| bind.is_ipv4() == addr.is_ipv4())
        })
        .collect();
    let order = interleave(&usable);
    let outcome = match order.as_slice() {
        // The common case: one address, nothing to race, no task to spawn.
        [only] => tokio::time::timeout_at(deadline, connect_one(*only, options.bind))
            .await
            .map_err(|_elapsed| None)
            .and_then(|connected| connected.map(|stream| (stream, *only)).map_err(Some)),
        _ => race(&order, options.bind, started, deadline, shown).await,
    };
    match outcome {
        Ok(connected) => Ok(connected),
        // Out of time.
        Err(None) if !order.is_empty() => Err(ProxyError::ConnectTimeout {
            target: shown.to_string(),
        }),
        Err(last_error) => Err(ProxyError::ConnectFailed {
            target: shown.to_string(),
            error: last_error.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    "no address of the family of proxy_connect_bind",
                )
            }),
        }),
    }
}

/// Happy Eyeballs over `order`: the first connection wins. `Err(None)` is running out of
/// time; `Err(Some(error))` is every attempt failing, with the last error.
async fn race(
    order: &[SocketAddr],
    bind: Option<IpAddr>,
    started: Instant,
    deadline: Instant,
    shown: &str,
) -> Result<(TcpStream, SocketAddr), Option<io::Error>> {
    let mut schedule = Schedule::new(order.len(), started);
    let mut attempts = JoinSet::new();
    let mut last_error = None;
    loop {
        if attempts.is_empty() && schedule.exhausted() {
            return Err(last_error);
        }
        tokio::select! {
            // An attempt that finished is looked at before another one starts.
            biased;
            Some(joined) = attempts.join_next() => {
                let Ok((addr, result)) = joined else { continue };
                match result {
                    Ok(stream) => {
                        log::debug!("connected to {addr} for {shown} in {:?}", started.elapsed());
                        // Dropping `attempts` aborts the others and closes what they opened.
                        return Ok((stream, addr));
                    }
                    Err(error) => {
                        log::debug!("connect to {addr} for {shown} failed: {error}");
                        last_error = Some(error);
                        schedule.failed(Instant::now());
                    }
                }
            }
            () = sleep_until(schedule.next_at()), if !schedule.exhausted() => {
                let addr = order[schedule.start(Instant::now())];
                attempts.spawn(async move { (addr, connect_one(addr, bind).await) });
            }
            () = sleep_until(deadline) => return Err(None),
        }
    }
}

/// The order to try `addrs` in (RFC 8305 section 4): alternating between families, starting
/// with the family of the first address, each family keeping its own order.
pub fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut preferred, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
        .iter()
        .partition(|addr| addr.is_ipv4() == first.is_ipv4());
    let mut order = Vec::with_capacity(addrs.len());
    preferred.reverse();
    other.reverse();
    loop {
        match (preferred.pop(), other.pop()) {
            (None, None) => return order,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
}

/// When each attempt starts: the first at once, each next one [`ATTEMPT_DELAY`] after the
/// previous start, or as soon as an attempt fails.
#[derive(Debug)]
struct Schedule {
    len: usize,
    started: usize,
    next_at: Instant,
}

impl Schedule {
    fn new(len: usize, now: Instant) -> Schedule {
        Schedule {
            len,
            started: 0,
            next_at: now,
        }
    }

    /// Every attempt has been started.
    fn exhausted(&self) -> bool {
        self.started >= self.len
    }

    /// When the next attempt is due.
    fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Records that the next attempt starts now; returns its index.
    fn start(&mut self, now: Instant) -> usize {
        let index = self.started;
        self.started += 1;
        self.next_at = deadline::after(now, ATTEMPT_DELAY);
        index
    }

    /// An attempt failed: the next one need not wait.
    fn failed(&mut self, now: Instant) {
        self.next_at = self.next_at.min(now);
    }
}

async fn connect_one(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn families_alternate_starting_with_the_first_address() {
        let got = interleave(&addrs(&[
            "192.0.2.1:443",
            "192.0.2.2:443",
            "192.0.2.3:443",
            "[2001:db8::1]:443",
            "[2001:db8::2]:443",
        ]));
        assert_eq!(
            got,
            addrs(&[
                "192.0.2.1:443",
                "[2001:db8::1]:443",
                "192.0.2.2:443",
                "[2001:db8::2]:443",
                "192.0.2.3:443",
            ])
        );
        let got = interleave(&addrs(&[
            "[2001:db8::1]:443",
            "192.0.2.1:443",
            "192.0.2.2:443",
        ]));
        assert_eq!(
            got,
            addrs(&["[2001:db8::1]:443", "192.0.2.1:443", "192.0.2.2:443"])
        );
        let one_family = addrs(&["192.0.2.2:443", "192.0.2.1:443"]);
        assert_eq!(interleave(&one_family), one_family);
        assert!(interleave(&[]).is_empty());
    }

    #[test]
    fn attempts_start_every_250ms_or_at_once_after_a_failure() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(3, t0);
        assert_eq!(schedule.next_at(), t0, "the first attempt starts at once");
        assert_eq!(schedule.start(t0), 0);
        assert_eq!(schedule.next_at(), t0 + ATTEMPT_DELAY);
        // The first attempt fails after 10 ms: the second starts then, not at 250 ms.
        let t1 = t0 + Duration::from_millis(10);
        schedule.failed(t1);
        assert_eq!(schedule.next_at(), t1);
        assert_eq!(schedule.start(t1), 1);
        // The second stays silent: the third is due 250 ms after the second started.
        assert_eq!(schedule.next_at(), t1 + ATTEMPT_DELAY);
        // A failure reported after the next start was due does not postpone it.
        schedule.failed(t1 + Duration::from_secs(1));
        assert_eq!(schedule.next_at(), t1 + ATTEMPT_DELAY);
        assert_eq!(schedule.start(t1 + ATTEMPT_DELAY), 2);
        assert!(schedule.exhausted());
    }

    /// A listener whose accept queue is full: SYNs to it are dropped, so a connect hangs.
    fn blackhole(ip: &str) -> Option<(socket2::Socket, Vec<std::net::TcpStream>, SocketAddr)> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
        let bind: SocketAddr = format!("{ip}:0").parse().ok()?;
        socket.bind(&bind.into()).ok()?;
        socket.listen(0).ok()?;
        let addr = socket.local_addr().ok()?.as_socket()?;
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => fillers.push(stream),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Some((socket, fillers, addr));
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn options(timeout: Duration) -> DialOptions {
        DialOptions {
            timeout,
            bind: None,
        }
    }

    #[tokio::test]
    async fn a_timeout_too_long_to_represent_is_no_panic() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = live.local_addr().unwrap().port();
        let one = vec![SocketAddr::from(([127, 0, 0, 1], port))];
        let two = vec![SocketAddr::from(([127, 0, 0, 2], port)), one[0]];
        for list in [one, two] {
            let (_, reached) = dial(&list, "t", options(Duration::MAX)).await.unwrap();
            assert_eq!(reached, *list.last().unwrap());
        }
    }

    #[tokio::test]
    async fn a_refused_first_address_hands_over_at_once() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = live.local_addr().unwrap().port();
        // Nothing listens on 127.0.0.2 at that port: refused.
        let list = vec![
            SocketAddr::from(([127, 0, 0, 2], port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        ];
        let started = Instant::now();
        let (stream, reached) = dial(&list, "t", options(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(reached, stream.peer_addr().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), list[1]);
        assert!(
            started.elapsed() < ATTEMPT_DELAY,
            "waited {:?} after a refusal",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_silent_first_address_gets_250ms_then_the_next_wins() {
        let Some((_hole, _fillers, hole)) = blackhole("127.0.0.1") else {
            eprintln!("skipped: could not make a listener that ignores SYNs");
            return;
        };
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let list = vec![hole, live.local_addr().unwrap()];
        let started = Instant::now();
        let (stream, reached) = dial(&list, "t", options(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(reached, stream.peer_addr().unwrap());
        let took = started.elapsed();
        assert_eq!(stream.peer_addr().unwrap(), list[1]);
        assert!(
            took >= ATTEMPT_DELAY,
            "the second attempt started early: {took:?}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[tokio::test]
    async fn all_refused_is_502_and_all_silent_is_504_at_the_deadline() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 2], port)),
        ];
        let error = dial(&refused, "t", options(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_eq!(error.status().0, 502, "{error}");

        let Some((_hole, _fillers, hole)) = blackhole("127.0.0.1") else {
            eprintln!("skipped: could not make a listener that ignores SYNs");
            return;
        };
        let started = Instant::now();
        let error = dial(&[hole, hole], "t", options(Duration::from_millis(700)))
            .await
            .unwrap_err();
        assert_eq!(error.status().0, 504, "{error}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(650) && took < Duration::from_millis(1500),
            "took {took:?}"
        );
    }

    #[tokio::test]
    async fn the_losing_attempt_is_abandoned() {
        let Some((hole_socket, fillers, hole)) = blackhole("127.0.0.1") else {
            eprintln!("skipped: could not make a listener that ignores SYNs");
            return;
        };
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let list = vec![hole, live.local_addr().unwrap()];
        let (stream, reached) = dial(&list, "t", options(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(reached, stream.peer_addr().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), list[1]);
        // Make room in the silent listener's queue: an attempt still alive would complete
        // with its next SYN retransmission (about a second after the first).
        let hole_socket = std::net::TcpListener::from(hole_socket);
        hole_socket.set_nonblocking(true).unwrap();
        let mut drained = 0;
        while hole_socket.accept().is_ok() && drained < 16 {
            drained += 1;
        }
        drop(fillers);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut late = 0;
        while let Ok((peer, _)) = hole_socket.accept() {
            // Connections are accepted in order; only a fresh one from this process counts.
            drop(peer);
            late += 1;
            if late > 16 {
                break;
            }
        }
        assert_eq!(
            late, 0,
            "the losing attempt connected after the winner was chosen"
        );
    }

    #[tokio::test]
    async fn a_bind_address_of_the_other_family_leaves_nothing_to_dial() {
        let list = addrs(&["[::1]:9"]);
        let options = DialOptions {
            timeout: Duration::from_secs(1),
            bind: Some("127.0.0.1".parse().unwrap()),
        };
        let error = dial(&list, "t", options).await.unwrap_err();
        assert_eq!(error.status().0, 502);
        assert!(error.to_string().contains("proxy_connect_bind"), "{error}");
    }
}
