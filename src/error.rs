//! Why a request was not served, and the HTTP answer each reason gets.
//!
//! Failures are classified where they are understood (the head reader, the target parser, the
//! resolver, the dialer); what each means is decided here, once, in [`ProxyError::class`]:
//! the status and text the client sees, the status the access log records, and the reason the
//! metrics count it under.

use std::fmt;
use std::io;

use crate::metrics::{ConnectFailure, Refusal};

/// A request that ends in an error response instead of a tunnel.
#[derive(Debug)]
pub enum ProxyError {
    /// The head is not valid HTTP/1.x or breaks a rule of the protocol.
    BadRequest(String),
    /// The request line is longer than the limit.
    RequestLineTooLong,
    /// The head as a whole, or the number of header fields, is over the limit.
    HeadTooLarge,
    /// The head did not arrive within `client_header_timeout`.
    HeadTimeout,
    /// A method this server does not serve; the text says what it does serve.
    MethodNotAllowed(&'static str),
    /// A CONNECT to a server block without `proxy_connect`.
    ConnectDisabled,
    /// `allow` / `deny` refused the client.
    ClientDenied,
    /// `auth_basic` is on and the credentials are missing or wrong.
    AuthRequired { realm: String },
    /// A destination rule (or a built-in one) refused every address of the target.
    DestinationDenied(String),
    /// A connection limit is reached.
    Overloaded(&'static str),
    /// `proxy_connect_allow` does not list the port.
    PortNotAllowed(u16),
    /// `proxy_http_allow` does not list the port of a forwarded request.
    ForwardPortNotAllowed(u16),
    /// The request body did not arrive in time.
    BodyTimeout,
    /// The name did not resolve to any usable address.
    ResolveFailed { host: String, reason: String },
    /// The name did not resolve within `resolver_timeout`.
    ResolveTimeout { host: String },
    /// Every address refused or was unreachable.
    ConnectFailed { target: String, error: io::Error },
    /// No address answered within `proxy_connect_connect_timeout`.
    ConnectTimeout { target: String },
    /// The origin's answer was missing or unusable.
    BadGateway(String),
    /// The origin did not answer within `proxy_read_timeout`.
    GatewayTimeout(String),
    /// No server of a parent proxy could be used: each one's reason, in the order tried.
    ParentFailed {
        parent: String,
        reasons: Vec<String>,
        timed_out: bool,
    },
    /// A parent proxy answered a CONNECT with this non-2xx status, or a forwarded request
    /// with a 407. A parent's 407 is not the client's to fix, so it is never passed on as one.
    ParentRefused { parent: String, status: u16 },
    /// `return CODE [TEXT]`: the rewrite phase answered. A redirection's text is its
    /// `Location`; `444` closes without an answer, as in nginx.
    Returned { status: u16, text: Option<String> },
}

/// What a failure means, decided once per kind of failure: the status the client is answered
/// with (and the access log records), and what the metrics count it as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub status: u16,
    /// The status's reason phrase.
    pub reason: &'static str,
    /// The policy or limit that refused the request (`sluice_refused_total`).
    pub refusal: Option<Refusal>,
    /// Why reaching the upstream failed (`sluice_upstream_connect_failures_total`).
    pub connect_failure: Option<ConnectFailure>,
}

impl ProxyError {
    /// How this failure is answered and counted.
    pub fn class(&self) -> Class {
        use ConnectFailure as Connect;
        let (status, refusal, connect_failure) = match self {
            ProxyError::BadRequest(_) => (400, None, None),
            ProxyError::RequestLineTooLong => (414, None, None),
            ProxyError::HeadTooLarge => (431, None, None),
            ProxyError::HeadTimeout | ProxyError::BodyTimeout => (408, None, None),
            ProxyError::MethodNotAllowed(_) | ProxyError::ConnectDisabled => (405, None, None),
            ProxyError::ClientDenied => (403, Some(Refusal::Acl), None),
            ProxyError::DestinationDenied(_) => {
                (403, Some(Refusal::Destination), Some(Connect::Denied))
            }
            ProxyError::PortNotAllowed(_) | ProxyError::ForwardPortNotAllowed(_) => {
                (403, Some(Refusal::Port), None)
            }
            ProxyError::AuthRequired { .. } => (407, Some(Refusal::Auth), None),
            ProxyError::Overloaded(_) => (503, Some(Refusal::Limit), None),
            ProxyError::ConnectFailed { error, .. }
                if error.kind() == io::ErrorKind::ConnectionRefused =>
            {
                (502, None, Some(Connect::Refused))
            }
            ProxyError::ConnectFailed { .. } => (502, None, Some(Connect::Unreachable)),
            ProxyError::ResolveFailed { .. } | ProxyError::BadGateway(_) => (502, None, None),
            ProxyError::ConnectTimeout { .. } => (504, None, Some(Connect::Timeout)),
            ProxyError::ResolveTimeout { .. } | ProxyError::GatewayTimeout(_) => (504, None, None),
            ProxyError::ParentFailed {
                timed_out: true, ..
            } => (504, None, Some(Connect::Timeout)),
            ProxyError::ParentFailed { .. } => (502, None, Some(Connect::Unreachable)),
            ProxyError::ParentRefused { .. } => (502, None, None),
            ProxyError::Returned { status, .. } => (*status, None, None),
        };
        Class {
            status,
            reason: reason_phrase(status),
            refusal,
            connect_failure,
        }
    }

    /// The status code and its reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        let class = self.class();
        (class.status, class.reason)
    }

    /// The complete response: status line, headers, a one-line plain-text body. The connection
    /// is always closed after it.
    pub fn response(&self) -> Vec<u8> {
        if let ProxyError::Returned { status, text } = self {
            return returned(*status, text.as_deref());
        }
        let (code, reason) = self.status();
        let body = format!("{code} {reason}: {self}\n");
        let extra = match self {
            ProxyError::MethodNotAllowed(allowed) => format!("Allow: {allowed}\r\n"),
            ProxyError::AuthRequired { realm } => {
                format!(
                    "Proxy-Authenticate: Basic realm=\"{}\"\r\n",
                    realm.replace(['"', '\\'], "")
                )
            }
            _ => String::new(),
        };
        format!(
            "HTTP/1.1 {code} {reason}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\n\
             {extra}\
             Connection: close\r\n\
             \r\n\
             {body}",
            body.len()
        )
        .into_bytes()
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::BadRequest(why) => f.write_str(why),
            ProxyError::RequestLineTooLong => f.write_str("the request line is too long"),
            ProxyError::HeadTooLarge => f.write_str("the request head is too large"),
            ProxyError::HeadTimeout => f.write_str("the request head did not arrive in time"),
            ProxyError::MethodNotAllowed(allowed) => {
                write!(f, "this proxy serves only {allowed} requests")
            }
            ProxyError::ConnectDisabled => f.write_str("CONNECT is not enabled on this server"),
            ProxyError::ClientDenied => f.write_str("access denied"),
            ProxyError::AuthRequired { .. } => f.write_str("proxy authentication required"),
            ProxyError::DestinationDenied(why) => write!(f, "destination denied: {why}"),
            ProxyError::Overloaded(which) => write!(f, "too many connections ({which})"),
            ProxyError::PortNotAllowed(port) => {
                write!(f, "CONNECT to port {port} is not allowed")
            }
            ProxyError::ForwardPortNotAllowed(port) => {
                write!(f, "forwarding to port {port} is not allowed")
            }
            ProxyError::BodyTimeout => f.write_str("the request body did not arrive in time"),
            ProxyError::BadGateway(why) | ProxyError::GatewayTimeout(why) => f.write_str(why),
            ProxyError::ResolveFailed { host, reason } => {
                write!(f, "cannot resolve \"{host}\": {reason}")
            }
            ProxyError::ResolveTimeout { host } => {
                write!(f, "resolving \"{host}\" timed out")
            }
            ProxyError::ConnectFailed { target, error } => {
                write!(f, "cannot connect to {target}: {}", describe(error))
            }
            ProxyError::ConnectTimeout { target } => {
                write!(f, "connecting to {target} timed out")
            }
            ProxyError::ParentFailed {
                parent, reasons, ..
            } => {
                write!(
                    f,
                    "parent proxy \"{parent}\" failed: {}",
                    reasons.join("; ")
                )
            }
            ProxyError::ParentRefused { parent, status } => {
                write!(
                    f,
                    "parent proxy \"{parent}\" refused the request with status {status}"
                )
            }
            ProxyError::Returned { status, .. } => write!(f, "\"return {status}\""),
        }
    }
}

/// The answer of `return`: the text as the body, or for a redirection the `Location` (nginx's
/// codes 301, 302, 303, 307 and 308). Without text, an error status gets its reason as the
/// body. `444` is no answer at all.
fn returned(status: u16, text: Option<&str>) -> Vec<u8> {
    if status == 444 {
        return Vec::new();
    }
    let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
    let (location, body) = match text {
        Some(url) if redirect => (format!("Location: {url}\r\n"), String::new()),
        Some(text) => (String::new(), text.to_string()),
        None if status >= 400 => (
            String::new(),
            format!("{status} {}\n", reason_phrase(status)),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "HTTP/1.1 {status} {}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         {location}\
         Connection: close\r\n\
         \r\n\
         {body}",
        reason_phrase(status),
        body.len()
    )
    .into_bytes()
}

impl std::error::Error for ProxyError {}

/// The reason phrase of a status an error answer may have.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        429 => "Too Many Requests",
        451 => "Unavailable For Legal Reasons",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        500 => "Internal Server Error",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// An I/O error in a few plain words, without the `(os error N)` suffix.
pub fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_string(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(cut) => text[..cut].to_lowercase(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_complete_and_close() {
        let text = String::from_utf8(ProxyError::PortNotAllowed(25).response()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(body, "403 Forbidden: CONNECT to port 25 is not allowed\n");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_method() {
        let text = String::from_utf8(ProxyError::MethodNotAllowed("CONNECT").response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: CONNECT\r\n"));
    }

    #[test]
    fn every_failure_has_a_reason_phrase() {
        let io = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let every = [
            ProxyError::BadRequest(String::new()),
            ProxyError::RequestLineTooLong,
            ProxyError::HeadTooLarge,
            ProxyError::HeadTimeout,
            ProxyError::MethodNotAllowed("CONNECT"),
            ProxyError::ConnectDisabled,
            ProxyError::ClientDenied,
            ProxyError::AuthRequired {
                realm: String::new(),
            },
            ProxyError::DestinationDenied(String::new()),
            ProxyError::Overloaded("max_connections"),
            ProxyError::PortNotAllowed(25),
            ProxyError::ForwardPortNotAllowed(25),
            ProxyError::BodyTimeout,
            ProxyError::ResolveFailed {
                host: String::new(),
                reason: String::new(),
            },
            ProxyError::ResolveTimeout {
                host: String::new(),
            },
            ProxyError::ConnectFailed {
                target: String::new(),
                error: io(),
            },
            ProxyError::ConnectTimeout {
                target: String::new(),
            },
            ProxyError::BadGateway(String::new()),
            ProxyError::GatewayTimeout(String::new()),
        ];
        for error in every {
            let class = error.class();
            assert_ne!(class.reason, "Error", "{error:?}");
        }
    }

    #[test]
    fn io_errors_read_plainly() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let err = ProxyError::ConnectFailed {
            target: "127.0.0.1:9".into(),
            error: refused,
        };
        assert_eq!(
            err.to_string(),
            "cannot connect to 127.0.0.1:9: connection refused"
        );
    }
}
