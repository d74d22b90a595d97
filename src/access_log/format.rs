//! `log_format`: which variables exist, how their values are escaped, and how one request
//! becomes one line.
//!
//! A format is parsed once, at config time, so an unknown variable is a config error. Values
//! are escaped as nginx escapes them; literal text in the format is written as it is.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Entry;
use crate::request::Head;
use crate::template::Template;

/// nginx's `combined` format, predefined.
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                            $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// sluice's own predefined format, `sluice`: `combined` with what a proxy operator asks
/// about — bytes both ways, duration, the user, where the tunnel or request went and how long
/// reaching it took.
pub const SLUICE: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
                          $bytes_sent $bytes_received $request_time \"$http_user_agent\" \
                          upstream=$upstream_addr resolve=$proxy_connect_resolve_time \
                          connect=$proxy_connect_connect_time";

/// `log_format NAME escape=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `"`, `\`, control bytes and bytes ≥ 0x7f as `\xHH`; a missing value is `-`.
    Default,
    /// JSON string escaping; a missing value is empty.
    Json,
    /// Values as they are; a missing value is `-`.
    None,
}

impl Escape {
    pub fn parse(text: &str) -> Option<Escape> {
        match text {
            "default" => Some(Escape::Default),
            "json" => Some(Escape::Json),
            "none" => Some(Escape::None),
            _ => None,
        }
    }
}

/// A parsed `log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    pub name: String,
    escape: Escape,
    template: Template<Var>,
}

impl LogFormat {
    /// Parses the (already concatenated) format string. The error is nginx's wording.
    pub fn parse(name: &str, escape: Escape, text: &str) -> Result<LogFormat, String> {
        Ok(LogFormat {
            name: name.to_string(),
            escape,
            template: Template::parse(text, Var::lookup)?,
        })
    }

    /// `combined`, as nginx defines it.
    pub fn combined() -> LogFormat {
        LogFormat::parse("combined", Escape::Default, COMBINED).expect("combined parses")
    }

    /// `sluice`: see `SLUICE`.
    pub fn sluice() -> LogFormat {
        LogFormat::parse("sluice", Escape::Default, SLUICE).expect("sluice parses")
    }

    /// Appends the line for `entry` (without the newline), as of `now`.
    pub fn render(&self, entry: &Entry, now: SystemTime, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        self.template.render_bytes(out, |var, out| {
            value.clear();
            if !var.value(entry, now, &mut value) {
                if self.escape != Escape::Json {
                    out.push(b'-');
                }
                return;
            }
            match self.escape {
                Escape::Default => escape_default(&value, out),
                Escape::Json => escape_json(&value, out),
                Escape::None => out.extend_from_slice(&value),
            }
        });
    }
}

/// The variables a `log_format` may use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    RemotePort,
    /// `$proxy_protocol_addr`, `$proxy_protocol_port`: the client a PROXY header named.
    ProxyProtocolAddr,
    ProxyProtocolPort,
    /// `$realip_remote_addr`, `$realip_remote_port`: the TCP peer (the balancer).
    RealipRemoteAddr,
    RealipRemotePort,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    ServerProtocol,
    Status,
    BytesSent,
    BodyBytesSent,
    BytesReceived,
    RequestTime,
    ConnectHost,
    ConnectPort,
    ConnectAddr,
    ResolveTime,
    ConnectTime,
    UpstreamAddr,
    /// `$upstream_proxy`: the parent proxy's name, or `direct`.
    UpstreamProxy,
    Connection,
    ConnectionRequests,
    Pid,
    ServerAddr,
    ServerPort,
    /// `$ssl_protocol`, `$ssl_cipher`, `$ssl_server_name`, `$ssl_client_s_dn`,
    /// `$ssl_client_verify`: what the TLS handshake told, on an `ssl` listener.
    SslProtocol,
    SslCipher,
    SslServerName,
    SslClientSDn,
    SslClientVerify,
    /// `$http_NAME`: a request header, underscores standing for dashes.
    Http(String),
}

impl Var {
    fn lookup(name: &str) -> Option<Var> {
        Some(match name {
            "remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "proxy_protocol_addr" => Var::ProxyProtocolAddr,
            "proxy_protocol_port" => Var::ProxyProtocolPort,
            "realip_remote_addr" => Var::RealipRemoteAddr,
            "realip_remote_port" => Var::RealipRemotePort,
            "remote_user" => Var::RemoteUser,
            "time_local" => Var::TimeLocal,
            "time_iso8601" => Var::TimeIso8601,
            "msec" => Var::Msec,
            "request" => Var::Request,
            "request_method" => Var::RequestMethod,
            "request_uri" => Var::RequestUri,
            "server_protocol" => Var::ServerProtocol,
            "status" => Var::Status,
            "bytes_sent" => Var::BytesSent,
            "body_bytes_sent" => Var::BodyBytesSent,
            "bytes_received" | "request_length" => Var::BytesReceived,
            "request_time" => Var::RequestTime,
            "connect_host" => Var::ConnectHost,
            "connect_port" => Var::ConnectPort,
            "connect_addr" => Var::ConnectAddr,
            "proxy_connect_resolve_time" => Var::ResolveTime,
            "proxy_connect_connect_time" | "upstream_connect_time" => Var::ConnectTime,
            "upstream_addr" => Var::UpstreamAddr,
            "upstream_proxy" => Var::UpstreamProxy,
            "connection" => Var::Connection,
            "connection_requests" => Var::ConnectionRequests,
            "pid" => Var::Pid,
            "server_addr" => Var::ServerAddr,
            "server_port" => Var::ServerPort,
            "ssl_protocol" => Var::SslProtocol,
            "ssl_cipher" => Var::SslCipher,
            "ssl_server_name" => Var::SslServerName,
            "ssl_client_s_dn" => Var::SslClientSDn,
            "ssl_client_verify" => Var::SslClientVerify,
            _ => {
                let header = name.strip_prefix("http_")?;
                if header.is_empty() {
                    return None;
                }
                Var::Http(header.replace('_', "-"))
            }
        })
    }

    /// Appends this variable's raw value to `out`; `false` if it has none (nginx's "not
    /// found", written as `-`).
    fn value(&self, entry: &Entry, now: SystemTime, out: &mut Vec<u8>) -> bool {
        let head = entry.head.as_deref();
        let tls = entry.client.tls.as_deref();
        macro_rules! text {
            ($($arg:tt)*) => {{
                let _ = write!(out, $($arg)*);
                true
            }};
        }
        match self {
            Var::RemoteAddr => text!("{}", entry.client.peer.ip()),
            Var::RemotePort => text!("{}", entry.client.peer.port()),
            Var::ProxyProtocolAddr => match entry.client.proxy_protocol {
                Some(source) => text!("{}", source.ip()),
                None => false,
            },
            Var::ProxyProtocolPort => match entry.client.proxy_protocol {
                Some(source) => text!("{}", source.port()),
                None => false,
            },
            Var::RealipRemoteAddr => text!("{}", entry.client.tcp_peer.ip()),
            Var::RealipRemotePort => text!("{}", entry.client.tcp_peer.port()),
            Var::RemoteUser => match &entry.user {
                Some(user) => text!("{user}"),
                None => false,
            },
            Var::TimeLocal => with_clock(now, |clock| text!("{}", clock.local)),
            Var::TimeIso8601 => with_clock(now, |clock| text!("{}", clock.iso8601)),
            Var::Msec => {
                let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                text!("{}.{:03}", since.as_secs(), since.subsec_millis())
            }
            Var::Request => match head {
                Some(h) => text!("{} {} {}", h.method, h.target, protocol(entry, h)),
                None => false,
            },
            Var::RequestMethod => match head {
                Some(h) => text!("{}", h.method),
                None => false,
            },
            Var::RequestUri => match head {
                Some(h) => text!("{}", h.target),
                None => false,
            },
            Var::ServerProtocol => match head {
                Some(h) => text!("{}", protocol(entry, h)),
                None => false,
            },
            Var::Status => text!("{:03}", entry.status),
            Var::BytesSent => text!("{}", entry.bytes_sent),
            Var::BodyBytesSent => text!("{}", entry.body_bytes_sent),
            Var::BytesReceived => text!("{}", entry.bytes_received),
            Var::RequestTime => seconds(out, entry.started.elapsed()),
            Var::ConnectHost => match &entry.connect {
                Some(target) => text!("{}", target.host),
                None => false,
            },
            Var::ConnectPort => match &entry.connect {
                Some(target) => text!("{}", target.port),
                None => false,
            },
            Var::ConnectAddr => match (&entry.connect, entry.upstream) {
                (Some(_), Some(addr)) => text!("{addr}"),
                _ => false,
            },
            Var::UpstreamProxy => match &entry.route {
                Some(route) => text!("{route}"),
                None => false,
            },
            Var::UpstreamAddr => match entry.upstream {
                Some(addr) => text!("{addr}"),
                None => false,
            },
            Var::ResolveTime => entry.timings.resolve.is_some_and(|t| seconds(out, t)),
            Var::ConnectTime => entry.timings.connect.is_some_and(|t| seconds(out, t)),
            Var::Connection => text!("{}", entry.client.id),
            Var::ConnectionRequests => text!("{}", entry.requests),
            Var::Pid => text!("{}", std::process::id()),
            Var::ServerAddr => match entry.client.local {
                Some(local) => text!("{}", local.ip()),
                None => false,
            },
            Var::ServerPort => match entry.client.local {
                Some(local) => text!("{}", local.port()),
                None => false,
            },
            Var::SslProtocol => tls.is_some_and(|t| text!("{}", t.protocol)),
            Var::SslCipher => tls.is_some_and(|t| text!("{}", t.cipher)),
            Var::SslServerName => match tls.and_then(|t| t.server_name.as_deref()) {
                Some(name) => text!("{name}"),
                None => false,
            },
            Var::SslClientSDn => match tls.and_then(|t| t.client.as_ref()) {
                Some(client) => text!("{}", client.subject),
                None => false,
            },
            Var::SslClientVerify => tls.is_some_and(|t| text!("{}", t.client_verify())),
            Var::Http(name) => match head.and_then(|h| h.header(name)) {
                Some(value) => {
                    out.extend_from_slice(value);
                    true
                }
                None => false,
            },
        }
    }
}

/// A duration in seconds with millisecond resolution, as nginx writes `$request_time`.
/// `$server_protocol`: `HTTP/2.0` for a request that came in an HTTP/2 stream (translated to
/// HTTP/1.1 inside sluice), else the request line's version.
fn protocol(entry: &Entry, head: &Head) -> &'static str {
    match (entry.client.http2, head.version) {
        (true, _) => "HTTP/2.0",
        (false, 0) => "HTTP/1.0",
        (false, _) => "HTTP/1.1",
    }
}

fn seconds(out: &mut Vec<u8>, time: Duration) -> bool {
    let _ = write!(out, "{}.{:03}", time.as_secs(), time.subsec_millis());
    true
}

/// nginx's default escaping: `"`, `\`, control bytes and bytes from 0x7f up as `\xHH`.
pub fn escape_default(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

/// JSON string escaping, as nginx's `escape=json`: bytes from 0x80 up pass unchanged.
pub fn escape_json(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..0x20 => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
}

/// The two local-time renderings of one second, kept per thread: every line within the same
/// second reuses them.
struct Clock {
    second: i64,
    /// `$time_local`: `10/Oct/2000:13:55:36 -0700`.
    local: String,
    /// `$time_iso8601`: `2000-10-10T13:55:36-07:00`.
    iso8601: String,
}

thread_local! {
    static CLOCK: RefCell<Option<Clock>> = const { RefCell::new(None) };
}

fn with_clock<T>(now: SystemTime, use_it: impl FnOnce(&Clock) -> T) -> T {
    let second = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    CLOCK.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.as_ref().is_none_or(|c| c.second != second) {
            *cached = Some(Clock::at(second));
        }
        use_it(cached.as_ref().expect("just set"))
    })
}

impl Clock {
    fn at(second: i64) -> Clock {
        let tm = local_time(second);
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let offset = tm.gmtoff;
        let sign = if offset < 0 { '-' } else { '+' };
        let (oh, om) = (offset.abs() / 3600, offset.abs() % 3600 / 60);
        let mut local = String::with_capacity(26);
        let _ = write!(
            local,
            "{:02}/{}/{:04}:{:02}:{:02}:{:02} {sign}{oh:02}{om:02}",
            tm.day,
            MONTHS[tm.month.min(11)],
            tm.year,
            tm.hour,
            tm.minute,
            tm.second,
        );
        let mut iso8601 = String::with_capacity(25);
        let _ = write!(
            iso8601,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{oh:02}:{om:02}",
            tm.year,
            tm.month + 1,
            tm.day,
            tm.hour,
            tm.minute,
            tm.second,
        );
        Clock {
            second,
            local,
            iso8601,
        }
    }
}

/// A broken-down local time.
struct Tm {
    year: i64,
    /// 0 to 11.
    month: usize,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// Seconds east of UTC.
    gmtoff: i64,
}

/// The local time of a Unix second, by the C library (which reads `TZ` and /etc/localtime),
/// so no time-zone database is carried here.
fn local_time(second: i64) -> Tm {
    let time = second as libc::time_t;
    // SAFETY: localtime_r only writes the `tm` it is given; a zeroed `tm` is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&time, &mut tm).is_null() };
    if !ok {
        return Tm {
            year: 1970,
            month: 0,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            gmtoff: 0,
        };
    }
    Tm {
        year: i64::from(tm.tm_year) + 1900,
        month: usize::try_from(tm.tm_mon).unwrap_or(0),
        day: i64::from(tm.tm_mday),
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
        #[allow(clippy::unnecessary_cast)] // c_long is i32 on some targets
        gmtoff: tm.tm_gmtoff as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_escaping_is_nginx_s() {
        let mut out = Vec::new();
        escape_default(b"a \"b\" \\ \x01\x7f\xc3\xa9", &mut out);
        assert_eq!(out, b"a \\x22b\\x22 \\x5C \\x01\\x7F\\xC3\\xA9");
    }

    #[test]
    fn json_escaping() {
        let mut out = Vec::new();
        escape_json(b"a \"b\" \\ \n\t\x01\xc3\xa9", &mut out);
        assert_eq!(out, b"a \\\"b\\\" \\\\ \\n\\t\\u0001\xc3\xa9");
    }

    #[test]
    fn unknown_variables_are_refused() {
        assert_eq!(
            LogFormat::parse("x", Escape::Default, "$remote_addr $nope").unwrap_err(),
            "unknown \"nope\" variable"
        );
        assert!(LogFormat::parse("x", Escape::Default, "$http_").is_err());
        LogFormat::parse("x", Escape::Json, "${http_x_forwarded_for}").unwrap();
    }

    #[test]
    fn local_time_formats() {
        // 2000-10-10T20:55:36Z, whatever the machine's zone: check the shape and the offset.
        let clock = Clock::at(971_211_336);
        assert_eq!(clock.local.len(), 26, "{}", clock.local);
        assert_eq!(&clock.local[2..12], "/Oct/2000:", "{}", clock.local);
        assert_eq!(clock.iso8601.len(), 25, "{}", clock.iso8601);
        assert!(clock.iso8601.starts_with("2000-10-1"), "{}", clock.iso8601);
    }
}
