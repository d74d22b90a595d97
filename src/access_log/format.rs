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
use crate::template::Template;
use crate::variables::{Declared, Var};

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
        LogFormat::parse_declared(name, escape, text, &Declared::default())
    }

    /// [`LogFormat::parse`], where the `set` and `map` variables of the file may be used too.
    pub fn parse_declared(
        name: &str,
        escape: Escape,
        text: &str,
        declared: &Declared,
    ) -> Result<LogFormat, String> {
        Ok(LogFormat {
            name: name.to_string(),
            escape,
            template: crate::variables::parse(text, declared)?,
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

/// A duration in seconds with millisecond resolution, as nginx writes `$request_time`.
pub(crate) fn seconds(out: &mut Vec<u8>, time: Duration) -> bool {
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
pub(crate) struct Clock {
    second: i64,
    /// `$time_local`: `10/Oct/2000:13:55:36 -0700`.
    pub(crate) local: String,
    /// `$time_iso8601`: `2000-10-10T13:55:36-07:00`.
    pub(crate) iso8601: String,
}

thread_local! {
    static CLOCK: RefCell<Option<Clock>> = const { RefCell::new(None) };
}

pub(crate) fn with_clock<T>(now: SystemTime, use_it: impl FnOnce(&Clock) -> T) -> T {
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
