//! Reading a request head from a client: up to the blank line, within size and time limits,
//! then parsed by httparse and checked more strictly than httparse alone.
//!
//! Bytes that arrive after the head are not part of it: for a CONNECT they are the first bytes
//! of the tunnel (a TLS ClientHello sent without waiting for the 200), and are handed back.

use std::time::Duration;

use tokio::time::Instant;

pub mod settings;

use crate::error::ProxyError;
use crate::stream::{Conn, HeadError};
use crate::transport::ReadSide;

/// Size limits on a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line, CRLF included.
    pub line: usize,
    /// One header line, CRLF included.
    pub header_line: usize,
    /// The whole head, blank line included.
    pub head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // nginx's `large_client_header_buffers 4 8k`.
        Limits {
            line: 8 * 1024,
            header_line: 8 * 1024,
            head: 32 * 1024,
        }
    }
}

/// The most header fields a head may carry.
const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The request-target exactly as sent.
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    /// Owned copies of the fields httparse found, for heads that outlive their read buffer.
    pub fn owned(parsed: &[httparse::Header]) -> Vec<Header> {
        parsed
            .iter()
            .map(|h| Header {
                name: h.name.to_string(),
                value: h.value.to_vec(),
            })
            .collect()
    }
}

impl Head {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }
}

/// How reading a head ended without producing one.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed or reset before completing a head: there is nobody to answer.
    Closed,
    /// The client gets this error as its answer.
    Refused(ProxyError),
}

impl From<ProxyError> for ReadError {
    fn from(error: ProxyError) -> Self {
        ReadError::Refused(error)
    }
}

/// Reads one request head from `conn`, leaving whatever follows it in `conn.buf`.
///
/// Waits up to `idle` for the first byte (a keep-alive connection between requests), then
/// allows `timeout` for the whole head. A client that sends nothing is closed silently; one
/// that starts a head and stalls gets a 408; one whose first bytes cannot start a request
/// (a TLS ClientHello on the plain port, binary noise) gets a 400 at once.
pub async fn read_head<S: ReadSide>(
    conn: &mut Conn<S>,
    limits: Limits,
    idle: Duration,
    timeout: Duration,
) -> Result<Head, ReadError> {
    let timeout = read_request_start(conn, limits, idle, timeout).await?;
    let end = conn
        .read_head(limits.head, idle, timeout)
        .await
        .map_err(|error| match error {
            HeadError::Silent | HeadError::Idle | HeadError::Closed => ReadError::Closed,
            HeadError::TimedOut => ProxyError::HeadTimeout.into(),
            HeadError::TooLarge => too_large(conn.buf.data(), limits).into(),
        })?;
    let head = parse_head(&conn.buf.data()[..end], limits)?;
    conn.buf.consume(end);
    Ok(head)
}

/// Reads until the buffer holds the first byte of a request line, skipping the empty lines
/// RFC 9112 §2.2 lets a client send before it, and checks that the bytes so far can begin a
/// method. Returns what is left of `timeout` for the rest of the head.
async fn read_request_start<S: ReadSide>(
    conn: &mut Conn<S>,
    limits: Limits,
    idle: Duration,
    timeout: Duration,
) -> Result<Duration, ReadError> {
    // When the first byte came: the head's time runs from then.
    let mut started = (!conn.buf.is_empty()).then(Instant::now);
    let left = |started: Option<Instant>| started.map(|s| timeout.saturating_sub(s.elapsed()));
    let mut skipped = 0;
    loop {
        let data = conn.buf.data();
        let empty_lines = data
            .chunks_exact(2)
            .take_while(|pair| *pair == b"\r\n")
            .count();
        skipped += empty_lines * 2;
        conn.buf.consume(empty_lines * 2);
        if skipped > limits.line {
            return Err(
                ProxyError::BadRequest("malformed request: only empty lines".into()).into(),
            );
        }
        match starts_a_request(conn.buf.data()) {
            Some(true) => break,
            Some(false) => {
                return Err(ProxyError::BadRequest(
                    "malformed request: these bytes cannot start an HTTP request".into(),
                )
                .into());
            }
            None => {}
        }
        let wait = left(started).unwrap_or(idle);
        match conn.buf.fill(&mut conn.stream, limits.head, wait).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {
                started.get_or_insert_with(Instant::now);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && started.is_some() => {
                return Err(ProxyError::HeadTimeout.into());
            }
            Err(_) => return Err(ReadError::Closed),
        }
    }
    Ok(left(started).unwrap_or(timeout))
}

/// Whether `bytes` (past any empty lines) can begin a request line: a method of token
/// characters (RFC 9110 §5.6.2) up to the first space. `None` until there is a byte to judge,
/// or a lone `\r` that may yet be an empty line.
fn starts_a_request(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [] | [b'\r'] => None,
        _ => Some(
            bytes
                .iter()
                .take_while(|&&b| b != b' ')
                .all(|&b| is_token_char(b))
                && bytes[0] != b' ',
        ),
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn first_line_len(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|p| p + 1)
}

fn too_large(buf: &[u8], limits: Limits) -> ProxyError {
    match first_line_len(buf) {
        Some(len) if len <= limits.line => ProxyError::HeadTooLarge,
        _ => ProxyError::RequestLineTooLong,
    }
}

/// Parses a complete head (ending in `\r\n\r\n`).
pub fn parse_head(bytes: &[u8], limits: Limits) -> Result<Head, ProxyError> {
    if first_line_len(bytes).is_some_and(|len| len > limits.line) {
        return Err(ProxyError::RequestLineTooLong);
    }
    check_line_endings(bytes)?;
    if bytes
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() + 1 > limits.header_line)
    {
        return Err(ProxyError::HeadTooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(ProxyError::BadRequest("incomplete request head".into()));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ProxyError::HeadTooLarge),
        Err(e) => {
            return Err(ProxyError::BadRequest(format!(
                "malformed request: {}",
                describe(e)
            )));
        }
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(ProxyError::BadRequest("incomplete request line".into()));
    };
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        version,
        headers: Header::owned(request.headers),
    })
}

/// httparse accepts a bare `\n` as a line ending; HTTP/1.1 parsers that disagree about line
/// endings are how requests get smuggled, so sluice accepts only `\r\n`.
fn check_line_endings(bytes: &[u8]) -> Result<(), ProxyError> {
    let bare_lf = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    let bare_cr = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
    if bare_lf || bare_cr {
        return Err(ProxyError::BadRequest(
            "malformed request: lines must end in CRLF".into(),
        ));
    }
    Ok(())
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in the request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Head, ProxyError> {
        parse_head(text.as_bytes(), Limits::default())
    }

    #[test]
    fn parses_a_connect_head() {
        let head =
            parse("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n").unwrap();
        assert_eq!(head.method, "CONNECT");
        assert_eq!(head.target, "example.org:443");
        assert_eq!(head.version, 1);
        assert_eq!(head.header("host"), Some(&b"example.org:443"[..]));
    }

    #[test]
    fn refuses_what_smuggling_relies_on() {
        let bad = [
            "CONNECT a:443 HTTP/1.1\nHost: a\r\n\r\n", // bare LF
            "CONNECT a:443 HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", // bare CR
            "CONNECT a:443 HTTP/1.1\r\nHost : a\r\n\r\n", // space before colon
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", // obs-fold
            "CONNECT a:443 HTTP/1.1\r\nHo\0st: a\r\n\r\n", // NUL
            "CONNECT a:443 HTTP/2.0\r\n\r\n",
            "CONNECT  a:443 HTTP/1.1\r\n\r\n",
            "CONNECT a:443\r\n\r\n",
        ];
        for text in bad {
            assert!(
                matches!(parse(text), Err(ProxyError::BadRequest(_))),
                "{text:?} was accepted"
            );
        }
    }

    #[test]
    fn only_a_method_token_can_start_a_request() {
        for start in [&b"G"[..], b"GET", b"CONNECT a:443", b"M-SEARCH * "] {
            assert_eq!(starts_a_request(start), Some(true), "{start:?}");
        }
        for start in [
            &b"\x16\x03\x01"[..],
            b"\0",
            b" GET",
            b"\nGET",
            b"\rX",
            b"GE\x7fT ",
        ] {
            assert_eq!(starts_a_request(start), Some(false), "{start:?}");
        }
        assert_eq!(starts_a_request(b""), None);
        assert_eq!(starts_a_request(b"\r"), None);
    }

    #[test]
    fn too_many_headers_is_too_large() {
        let mut text = String::from("CONNECT a:443 HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("X-{i}: y\r\n"));
        }
        text.push_str("\r\n");
        assert!(matches!(parse(&text), Err(ProxyError::HeadTooLarge)));
    }
}
