//! Parsers for the argument values directives take: times, sizes, ports, addresses.
//!
//! Each returns a short reason on failure; the caller adds the directive name and `file:line`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A time in nginx's notation: `500ms`, `30s`, `5m`, `1h`, `2d`, `1w`, `1M`, `1y`, combinations
/// such as `1m30s`, or a bare number of seconds.
pub fn parse_time(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, unit_len): (u64, usize) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let unit = match rest.bytes().next()? {
                b's' => 1_000,
                b'm' => 60_000,
                b'h' => 3_600_000,
                b'd' => 86_400_000,
                b'w' => 7 * 86_400_000,
                b'M' => 30 * 86_400_000,
                b'y' => 365 * 86_400_000,
                _ => return None,
            };
            (unit, 1)
        };
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::from_millis(value.checked_mul(unit_ms)?))?;
    }
    Some(total)
}

/// A size in bytes: `512`, `8k`, `1m`, `1g` (either case).
pub fn parse_size(text: &str) -> Option<usize> {
    let (digits, multiplier) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_mul(multiplier)
}

/// A TCP port, 1–65535.
pub fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&p| p != 0)
}

/// An IP address literal, IPv6 with or without brackets.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok()
}

/// Why a `listen` address was refused; the caller words the message with the directive.
#[derive(Debug, PartialEq, Eq)]
pub enum ListenError {
    InvalidPort,
    HostNotFound,
}

/// The address part of `listen`: `PORT`, `ADDR:PORT`, `[v6]:PORT`, `*:PORT`, `ADDR`,
/// `[v6]` (port 80, as in nginx) or `name:PORT` (every address of the name). Port 0 asks the
/// kernel for a free port, which tests use.
pub fn parse_listen(text: &str) -> Result<Vec<SocketAddr>, ListenError> {
    let port_of = |p: &str| -> Result<u16, ListenError> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ListenError::InvalidPort);
        }
        p.parse::<u16>().map_err(|_| ListenError::InvalidPort)
    };
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(vec![SocketAddr::new([0, 0, 0, 0].into(), port_of(text)?)]);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(ListenError::HostNotFound)?;
        let port = match after {
            "" => 80,
            _ => port_of(after.strip_prefix(':').ok_or(ListenError::InvalidPort)?)?,
        };
        let ip: IpAddr = v6.parse().map_err(|_| ListenError::HostNotFound)?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, port_of(port)?),
            None => (text, 80),
        }
    };
    if host == "*" {
        return Ok(vec![SocketAddr::new([0, 0, 0, 0].into(), port)]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // A name: bind every address it has, as nginx does. This runs once, at startup.
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|_| ListenError::HostNotFound)?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(ListenError::HostNotFound);
    }
    Ok(addrs)
}

/// An `IP` or `IP:PORT` / `[v6]:PORT`, as `proxy_connect_address` and `resolver` take.
pub fn parse_ip_and_port(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(ip) = parse_ip(text) {
        return Some((ip, None));
    }
    let addr: SocketAddr = text.parse().ok()?;
    (addr.port() != 0).then_some((addr.ip(), Some(addr.port())))
}

/// Why [`splits_a_line`] refuses a value.
pub const SPLITS_A_LINE: &str = "CR, LF and NUL are not allowed in a value sent in a header";

/// Whether a value written into a header line holds CR, LF or NUL: a line break would end the
/// header early and turn the rest into a header (or a request) of its own, and HTTP parsers
/// refuse NUL.
pub fn splits_a_line(value: &str) -> bool {
    value.contains(['\r', '\n', '\0'])
}

/// `on` or `off`.
pub fn parse_flag(text: &str) -> Option<bool> {
    match text {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// Ports a destination may have (`proxy_connect_allow`, `proxy_http_allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortList {
    All,
    /// Inclusive ranges; a single port is a range of one.
    Ranges(Vec<(u16, u16)>),
}

impl PortList {
    pub fn allows(&self, port: u16) -> bool {
        match self {
            PortList::All => true,
            PortList::Ranges(ranges) => ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_time("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_time("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("1s500ms"), Some(Duration::from_millis(1500)));
        for bad in ["", "s", "1x", "-1", "1.5s", "m5", "99999999999999999999y"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("8k"), Some(8192));
        assert_eq!(parse_size("8K"), Some(8192));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        for bad in ["", "k", "1.5k", "-1", "8kb"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("443"), Some(443));
        assert_eq!(parse_port("65535"), Some(65535));
        for bad in ["0", "65536", "", "+1", "x", "99999"] {
            assert_eq!(parse_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn listen_forms() {
        let one = |s: &str| parse_listen(s).unwrap()[0];
        assert_eq!(one("10101"), "0.0.0.0:10101".parse().unwrap());
        assert_eq!(one("127.0.0.1:3128"), "127.0.0.1:3128".parse().unwrap());
        assert_eq!(one("[::1]:3128"), "[::1]:3128".parse().unwrap());
        assert_eq!(one("[::]"), "[::]:80".parse().unwrap());
        assert_eq!(one("*:8080"), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(one("127.0.0.1"), "127.0.0.1:80".parse().unwrap());
        assert_eq!(parse_listen("x:99999"), Err(ListenError::InvalidPort));
        assert_eq!(parse_listen("1.2.3.4:"), Err(ListenError::InvalidPort));
        assert_eq!(parse_listen("[::1]x"), Err(ListenError::InvalidPort));
        assert_eq!(parse_listen("[zz]:1"), Err(ListenError::HostNotFound));
        assert_eq!(
            parse_listen("no-such-host.invalid:80"),
            Err(ListenError::HostNotFound)
        );
    }

    #[test]
    fn ip_and_port() {
        assert_eq!(
            parse_ip_and_port("10.0.0.1"),
            Some(("10.0.0.1".parse().unwrap(), None))
        );
        assert_eq!(
            parse_ip_and_port("[::1]:53"),
            Some(("::1".parse().unwrap(), Some(53)))
        );
        assert_eq!(parse_ip_and_port("dns.example"), None);
        assert_eq!(parse_ip_and_port("1.2.3.4:0"), None);
    }
}
