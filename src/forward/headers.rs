//! The heads sluice writes when it forwards: the request to the origin and the response to the
//! client. Hop-by-hop fields never cross (RFC 9110 §7.6.1), framing fields are sluice's own,
//! and `Via` records the hop.

use std::net::SocketAddr;

use super::framing::{Framing, list};
use super::settings::{Forwarding, HeaderVar};
use super::uri::AbsoluteUri;
use crate::parent::Parent;
use crate::request::{Head, Header};

/// Fields that describe one connection, not the message: never forwarded in either direction.
/// `Proxy-Authorization` is meant for this proxy and `Proxy-Authenticate` for the next one.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The `Via` value sluice adds.
const VIA: &str = "1.1 sluice";

/// Whether `name` must not cross this hop, given the `Connection` tokens of the message.
fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` + `Upgrade: websocket`).
pub fn upgrade_protocol(head: &Head) -> Option<String> {
    if !list(&head.headers, "connection")
        .iter()
        .any(|t| t == "upgrade")
    {
        return None;
    }
    let value = head.header("upgrade")?;
    let protocol = String::from_utf8_lossy(value).trim().to_string();
    (!protocol.is_empty()).then_some(protocol)
}

/// What a request looks like to the `proxy_set_header` variables.
pub struct RequestInfo<'a> {
    pub head: &'a Head,
    pub uri: &'a AbsoluteUri,
    pub peer: SocketAddr,
    /// The request's record, for every other variable (`set`, `map`, `$request_port`...).
    pub entry: Option<&'a crate::access_log::Entry<'a>>,
}

impl RequestInfo<'_> {
    fn expand(&self, var: &HeaderVar, out: &mut String) {
        match var {
            HeaderVar::HttpHost => out.push_str(&self.uri.authority),
            HeaderVar::Host => out.push_str(&self.uri.target.host.to_string()),
            HeaderVar::RemoteAddr => out.push_str(&self.peer.ip().to_string()),
            HeaderVar::RemotePort => out.push_str(&self.peer.port().to_string()),
            HeaderVar::ProxyAddXForwardedFor => {
                let prior: Vec<String> = self
                    .head
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
                    .map(|h| String::from_utf8_lossy(&h.value).trim().to_string())
                    .collect();
                for value in prior {
                    out.push_str(&value);
                    out.push_str(", ");
                }
                out.push_str(&self.peer.ip().to_string());
            }
            HeaderVar::RequestUri => out.push_str(&self.uri.path_and_query),
            HeaderVar::RequestMethod => out.push_str(&self.head.method),
            HeaderVar::Http(name) if name.eq_ignore_ascii_case("host") => {
                out.push_str(&self.uri.authority)
            }
            HeaderVar::Http(name) => {
                if let Some(value) = self.head.header(name) {
                    out.push_str(&String::from_utf8_lossy(value));
                }
            }
            HeaderVar::Other(var) => {
                if let Some(entry) = self.entry {
                    let mut value = Vec::new();
                    var.value(entry, std::time::SystemTime::now(), &mut value);
                    out.push_str(&String::from_utf8_lossy(&value));
                }
            }
        }
    }
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The head sent to the origin: origin-form target, `Host` from the URI (RFC 9112 §3.2.2),
/// the client's end-to-end fields, `proxy_set_header` fields, `Via`, and sluice's framing.
pub fn request_head(
    info: &RequestInfo,
    framing: Framing,
    upgrade: Option<&str>,
    forwarding: &Forwarding,
    parent: Option<&Parent>,
) -> Vec<u8> {
    let head = info.head;
    let mut out = Vec::with_capacity(512);
    // A parent proxy gets the absolute form, and its own credentials (never the client's).
    let scheme = if parent.is_some() { "http://" } else { "" };
    let authority = if parent.is_some() {
        info.uri.authority.as_str()
    } else {
        ""
    };
    out.extend_from_slice(
        format!(
            "{} {scheme}{authority}{} HTTP/1.1\r\n",
            head.method, info.uri.path_and_query
        )
        .as_bytes(),
    );
    if let Some(credentials) = parent.and_then(|p| p.credentials.as_deref()) {
        push_field(&mut out, "Proxy-Authorization", credentials.as_bytes());
    }
    let overridden = |name: &str| {
        forwarding
            .set_headers
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(name))
    };
    if !overridden("host") {
        push_field(&mut out, "Host", info.uri.authority.as_bytes());
    }
    let tokens = list(&head.headers, "connection");
    for Header { name, value } in &head.headers {
        let framing_field =
            name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("host");
        if !framing_field && !is_hop_by_hop(name, &tokens) && !overridden(name) {
            push_field(&mut out, name, value);
        }
    }
    for set in &forwarding.set_headers {
        let mut value = String::new();
        set.value
            .render_into(&mut value, |var, out| info.expand(var, out));
        if !value.is_empty() {
            push_field(&mut out, &set.name, value.as_bytes());
        }
    }
    if forwarding.via {
        push_field(&mut out, "Via", VIA.as_bytes());
    }
    match framing {
        Framing::Length(n) => push_field(&mut out, "Content-Length", n.to_string().as_bytes()),
        Framing::Chunked => push_field(&mut out, "Transfer-Encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if let Some(protocol) = upgrade {
        push_field(&mut out, "Connection", b"upgrade");
        push_field(&mut out, "Upgrade", protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A response head as the origin sent it.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub version: u8,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

impl ResponseHead {
    /// Parses a complete head; `Err` says why it is unusable.
    pub fn parse(bytes: &[u8]) -> Result<ResponseHead, String> {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err("incomplete response head".into()),
            Err(e) => return Err(format!("malformed response head ({e})")),
        }
        let (Some(version), Some(status)) = (response.version, response.code) else {
            return Err("incomplete status line".into());
        };
        // httparse takes any three digits; RFC 9110 §15 defines 100 to 599 only.
        if !(100..=599).contains(&status) {
            return Err(format!("invalid status {status:03}"));
        }
        Ok(ResponseHead {
            version,
            status,
            reason: response.reason.unwrap_or_default().to_string(),
            headers: Header::owned(response.headers),
        })
    }

    /// Whether the origin said it will close, or cannot keep a connection open.
    pub fn closes(&self) -> bool {
        let tokens = list(&self.headers, "connection");
        self.version == 0 && !tokens.iter().any(|t| t == "keep-alive")
            || tokens.iter().any(|t| t == "close")
    }
}

/// How the response body is framed for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body; the origin's Content-Length (describing a HEAD or 304) passes unchanged.
    NoBody,
    Length(u64),
    Chunked,
    /// Until sluice closes the connection.
    Close,
}

/// The head sent to the client.
pub fn response_head(
    response: &ResponseHead,
    framing: ClientFraming,
    close: bool,
    upgrade: Option<&str>,
    via: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", response.status, response.reason).as_bytes(),
    );
    let tokens = list(&response.headers, "connection");
    let keeps_length = framing == ClientFraming::NoBody
        && !(100..200).contains(&response.status)
        && response.status != 204;
    for Header { name, value } in &response.headers {
        let length = name.eq_ignore_ascii_case("content-length");
        if !is_hop_by_hop(name, &tokens) && (!length || keeps_length) {
            push_field(&mut out, name, value);
        }
    }
    if via {
        push_field(&mut out, "Via", VIA.as_bytes());
    }
    match framing {
        ClientFraming::Length(n) => {
            push_field(&mut out, "Content-Length", n.to_string().as_bytes())
        }
        ClientFraming::Chunked => push_field(&mut out, "Transfer-Encoding", b"chunked"),
        ClientFraming::NoBody | ClientFraming::Close => {}
    }
    if let Some(protocol) = upgrade {
        push_field(&mut out, "Connection", b"upgrade");
        push_field(&mut out, "Upgrade", protocol.as_bytes());
    } else if close {
        push_field(&mut out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::settings::SetHeader;
    use crate::template::Template;

    fn head(text: &str) -> Head {
        crate::request::parse_head(text.as_bytes(), Default::default()).unwrap()
    }

    fn forwarding(set: &[(&str, &str)]) -> Forwarding {
        Forwarding {
            set_headers: set
                .iter()
                .map(|(name, value)| SetHeader {
                    name: name.to_string(),
                    value: Template::parse(value, HeaderVar::lookup).unwrap(),
                })
                .collect(),
            ..Forwarding::default()
        }
    }

    fn render(request: &str, set: &[(&str, &str)]) -> String {
        let head = head(request);
        let uri = AbsoluteUri::parse(&head.target).unwrap();
        let info = RequestInfo {
            head: &head,
            uri: &uri,
            peer: "192.0.2.9:5555".parse().unwrap(),
            entry: None,
        };
        let framing = super::super::framing::request(&head.headers, head.version).unwrap();
        String::from_utf8(request_head(
            &info,
            framing,
            upgrade_protocol(&head).as_deref(),
            &forwarding(set),
            None,
        ))
        .unwrap()
    }

    #[test]
    fn hop_by_hop_fields_are_dropped_and_host_comes_from_the_uri() {
        let out = render(
            "GET http://origin.test:8080/p?q HTTP/1.1\r\nHost: elsewhere.test\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\nProxy-Connection: keep-alive\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic eA==\r\n\
             TE: trailers\r\nTrailer: X\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n",
            &[],
        );
        assert_eq!(
            out,
            "GET /p?q HTTP/1.1\r\nHost: origin.test:8080\r\nAccept: */*\r\nVia: 1.1 sluice\r\n\r\n"
        );
    }

    #[test]
    fn proxy_set_header_replaces_adds_and_removes() {
        let out = render(
            "POST http://o.test/x HTTP/1.1\r\nHost: o.test\r\nX-Forwarded-For: 10.0.0.1\r\nAccept-Encoding: gzip\r\n\
             Content-Length: 3\r\n\r\n",
            &[
                ("Host", "$http_host"),
                ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
                ("X-Real-IP", "$remote_addr"),
                ("X-Where", "$host$request_uri $request_method"),
                ("Accept-Encoding", ""),
            ],
        );
        assert_eq!(
            out,
            "POST /x HTTP/1.1\r\nHost: o.test\r\nX-Forwarded-For: 10.0.0.1, 192.0.2.9\r\nX-Real-IP: 192.0.2.9\r\n\
             X-Where: o.test/x POST\r\nVia: 1.1 sluice\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn a_websocket_upgrade_keeps_its_upgrade_fields() {
        let out = render(
            "GET http://o.test/ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
            &[],
        );
        assert!(out.ends_with("Sec-WebSocket-Key: k\r\nVia: 1.1 sluice\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"), "{out}");
    }

    #[test]
    fn response_heads_lose_hop_by_hop_fields_and_gain_sluice_framing() {
        let response = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nProxy-Authenticate: Basic\r\n\
              Transfer-Encoding: chunked\r\nContent-Length: 9\r\nServer: o\r\n\r\n",
        )
        .unwrap();
        assert!(response.closes());
        let out = String::from_utf8(response_head(
            &response,
            ClientFraming::Chunked,
            false,
            None,
            true,
        ))
        .unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nServer: o\r\nVia: 1.1 sluice\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let head_reply =
            ResponseHead::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n").unwrap();
        let out = String::from_utf8(response_head(
            &head_reply,
            ClientFraming::NoBody,
            true,
            None,
            false,
        ))
        .unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
        );
    }
}
