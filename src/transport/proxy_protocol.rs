//! Reading the PROXY protocol header (v1 text or v2 binary, told apart by their first bytes)
//! that a load balancer sends before the client's own bytes.
//!
//! The parsing is the `ppp` crate's; this file reads exactly enough bytes for it, bounds how
//! many and for how long, and keeps whatever the client sent after the header in the same
//! segment (its request head, the first bytes of a tunnel) for the connection to read.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The largest header accepted. v1 is at most 107 bytes; a v2 header is 16 bytes and the
/// addresses plus TLVs, which balancers keep to a few dozen bytes (AWS adds its endpoint id).
pub const MAX_HEADER: usize = 4096;
/// The v2 signature, which no v1 header or HTTP request starts with.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Bytes of a v2 header before its addresses: signature, version and command, family,
/// length.
const V2_FIXED: usize = 16;

/// A header read whole.
#[derive(Debug)]
pub struct Header {
    /// The client the balancer connected for; `None` for v2 `LOCAL` and v1 `UNKNOWN` (the
    /// balancer's own connection, such as a health check).
    pub source: Option<SocketAddr>,
    /// What the client sent after the header, read along with it.
    pub early: Vec<u8>,
}

/// Why no header was read; the connection is then closed without an answer.
#[derive(Debug)]
pub enum HeaderError {
    /// The peer closed before a whole header arrived (`received` bytes of it).
    Truncated {
        received: usize,
    },
    /// The bytes are not a PROXY header (the peer speaks HTTP straight away, or garbage).
    Malformed(String),
    /// More than [`MAX_HEADER`] bytes.
    Oversized,
    /// Not complete within `proxy_protocol_timeout`.
    Timeout,
    Io(std::io::Error),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated { received } => {
                write!(
                    f,
                    "closed after {received} bytes of a PROXY protocol header"
                )
            }
            HeaderError::Malformed(why) => write!(f, "a malformed PROXY protocol header ({why})"),
            HeaderError::Oversized => {
                write!(f, "a PROXY protocol header over {MAX_HEADER} bytes")
            }
            HeaderError::Timeout => write!(f, "no whole PROXY protocol header in time"),
            HeaderError::Io(error) => write!(f, "reading a PROXY protocol header: {error}"),
        }
    }
}

/// Reads the header from `socket`, in at most `timeout`.
pub async fn read(socket: &mut TcpStream, timeout: Duration) -> Result<Header, HeaderError> {
    tokio::time::timeout(timeout, read_whole(socket))
        .await
        .unwrap_or(Err(HeaderError::Timeout))
}

async fn read_whole(socket: &mut TcpStream) -> Result<Header, HeaderError> {
    // Most headers arrive in one segment with the client's first bytes; a read takes what is
    // there, up to a buffer's worth, so nothing is read twice.
    let mut buf = Vec::with_capacity(512);
    loop {
        if let Some(total) = v2_length(&buf)
            && total > MAX_HEADER
        {
            return Err(HeaderError::Oversized);
        }
        if !buf.is_empty() {
            let parsed = HeaderResult::parse(&buf);
            if !parsed.is_incomplete() {
                let (length, source) = interpret(parsed)?;
                return Ok(Header {
                    source,
                    early: buf.split_off(length),
                });
            }
        }
        if buf.len() >= MAX_HEADER {
            return Err(HeaderError::Oversized);
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(MAX_HEADER));
        }
        let received = buf.len();
        match socket.read_buf(&mut buf).await {
            Ok(0) => return Err(HeaderError::Truncated { received }),
            Ok(_) => {}
            Err(error) => return Err(HeaderError::Io(error)),
        }
    }
}

/// The whole length a v2 header announces, once its fixed part is in.
fn v2_length(buf: &[u8]) -> Option<usize> {
    if buf.len() < V2_FIXED || !buf.starts_with(V2_SIGNATURE) {
        return None;
    }
    Some(V2_FIXED + u16::from_be_bytes([buf[14], buf[15]]) as usize)
}

/// The length of a complete header and the client it names.
fn interpret(parsed: HeaderResult<'_>) -> Result<(usize, Option<SocketAddr>), HeaderError> {
    match parsed {
        HeaderResult::V1(Ok(header)) => {
            let source = match header.addresses {
                v1::Addresses::Unknown => None,
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            };
            Ok((header.header.len(), source))
        }
        HeaderResult::V2(Ok(header)) => {
            let source = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                // A client not on an IP network: the balancer is all that is known.
                (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            };
            Ok((header.len(), source))
        }
        HeaderResult::V1(Err(error)) => Err(HeaderError::Malformed(error.to_string())),
        HeaderResult::V2(Err(error)) => Err(HeaderError::Malformed(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<(usize, Option<SocketAddr>), HeaderError> {
        interpret(HeaderResult::parse(bytes))
    }

    #[test]
    fn v1_names_the_client_and_its_length_excludes_what_follows() {
        let bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 3128\r\nCONNECT";
        let (length, source) = parse(bytes).unwrap();
        assert_eq!(length, bytes.len() - "CONNECT".len());
        assert_eq!(source, Some("192.0.2.7:40000".parse().unwrap()));
    }

    #[test]
    fn v1_unknown_names_no_client() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), (15, None));
    }

    #[test]
    fn v2_length_is_read_from_the_fixed_part() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(v2_length(&bytes), Some(16 + 0xffff));
        assert_eq!(v2_length(&bytes[..15]), None);
    }

    #[test]
    fn http_is_not_a_header() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Err(HeaderError::Malformed(_))
        ));
    }
}
