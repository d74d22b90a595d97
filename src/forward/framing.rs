//! Where a message body ends (RFC 9112 §6), decided strictly.
//!
//! Request smuggling needs two parsers that disagree about where a body ends. sluice refuses
//! every request whose framing is ambiguous and re-frames every body it forwards, so the
//! origin only ever sees framing that sluice wrote.

use crate::error::ProxyError;
use crate::request::{Head, Header};

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

fn values<'h>(headers: &'h [Header], name: &'h str) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// The comma-separated elements of every field of this name, trimmed, lowercased.
pub fn list(headers: &[Header], name: &str) -> Vec<String> {
    values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|item| String::from_utf8_lossy(item.trim_ascii()).to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

/// One Content-Length value from every field and list element, or why there is none.
fn content_length(headers: &[Header]) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in values(headers, "content-length") {
        for item in value.split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 18 || !item.iter().all(u8::is_ascii_digit) {
                return Err("invalid Content-Length");
            }
            let n: u64 = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|seen| seen != n) {
                return Err("conflicting Content-Length values");
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// The framing of a request body, or a 400 for anything ambiguous.
pub fn request(headers: &[Header], version: u8) -> Result<Framing, ProxyError> {
    let bad = |why: &str| ProxyError::BadRequest(format!("refused: {why}"));
    let has_te = values(headers, "transfer-encoding").next().is_some();
    let length = content_length(headers).map_err(bad)?;
    if has_te {
        if length.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        if version == 0 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if list(headers, "transfer-encoding") != ["chunked"] {
            return Err(bad("Transfer-Encoding other than \"chunked\""));
        }
        return Ok(Framing::Chunked);
    }
    Ok(length.map_or(Framing::Empty, Framing::Length))
}

/// A CONNECT has no content (RFC 9110 §9.3.6): bytes announced as its body would otherwise
/// travel into the tunnel as if the client had sent them there. `Content-Length: 0` is fine.
pub fn refuse_connect_body(head: &Head) -> Result<(), ProxyError> {
    match request(&head.headers, head.version)? {
        Framing::Empty | Framing::Length(0) => Ok(()),
        _ => Err(ProxyError::BadRequest(
            "refused: a CONNECT request with a body".into(),
        )),
    }
}

/// What the response to a request is framed like, per RFC 9112 §6.3. `Err` is a response no
/// client could read safely (a 502).
pub fn response(
    headers: &[Header],
    status: u16,
    request_was_head: bool,
) -> Result<Framing, &'static str> {
    if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    let codings = list(headers, "transfer-encoding");
    if !codings.is_empty() {
        // Transfer-Encoding overrides Content-Length. sluice undoes only `chunked` and drops the
        // field, so any other coding would reach the client unannounced: refused, as nginx does.
        if codings != ["chunked"] {
            return Err("unknown Transfer-Encoding");
        }
        return Ok(Framing::Chunked);
    }
    Ok(match content_length(headers)? {
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    }

    #[test]
    fn request_framing() {
        assert_eq!(request(&headers(&[]), 1).unwrap(), Framing::Empty);
        assert_eq!(
            request(&headers(&[("Content-Length", "5")]), 1).unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            request(
                &headers(&[("Content-Length", "5"), ("content-length", "5, 5")]),
                1
            )
            .unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            request(&headers(&[("Transfer-Encoding", "Chunked")]), 1).unwrap(),
            Framing::Chunked
        );
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        for (pairs, version) in [
            (
                vec![("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                1,
            ),
            (vec![("Content-Length", "5"), ("Content-Length", "6")], 1),
            (vec![("Content-Length", "5, 6")], 1),
            (vec![("Content-Length", "-1")], 1),
            (vec![("Content-Length", "+5")], 1),
            (vec![("Content-Length", "0x5")], 1),
            (vec![("Content-Length", "")], 1),
            (vec![("Transfer-Encoding", "gzip, chunked")], 1),
            (vec![("Transfer-Encoding", "chunked, gzip")], 1),
            (
                vec![
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
                1,
            ),
            (vec![("Transfer-Encoding", "xchunked")], 1),
            (vec![("Transfer-Encoding", "chunked")], 0),
        ] {
            assert!(
                request(&headers(&pairs), version).is_err(),
                "{pairs:?} was accepted"
            );
        }
    }

    #[test]
    fn response_framing() {
        let none = headers(&[]);
        assert_eq!(response(&none, 200, false).unwrap(), Framing::UntilClose);
        assert_eq!(
            response(&headers(&[("Content-Length", "9")]), 200, true).unwrap(),
            Framing::Empty
        );
        for status in [101, 103, 204, 304] {
            assert_eq!(
                response(&headers(&[("Content-Length", "9")]), status, false).unwrap(),
                Framing::Empty
            );
        }
        let te_and_cl = headers(&[("Content-Length", "9"), ("Transfer-Encoding", "chunked")]);
        assert_eq!(response(&te_and_cl, 200, false).unwrap(), Framing::Chunked);
        for codings in [
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "chunked, chunked",
            "x",
        ] {
            assert!(
                response(&headers(&[("Transfer-Encoding", codings)]), 200, false).is_err(),
                "{codings:?} was accepted"
            );
        }
        assert!(response(&headers(&[("Content-Length", "1, 2")]), 200, false).is_err());
    }
}
