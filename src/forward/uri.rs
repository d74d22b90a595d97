//! The absolute-form request-target of a forwarded request: `http://host[:port]/path?query`.

use crate::error::ProxyError;
use crate::target::Target;

/// A parsed absolute URI with the `http` scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteUri {
    /// Where the request goes.
    pub target: Target,
    /// `host[:port]` as written: the Host header the origin receives (RFC 9112 §3.2.2).
    pub authority: String,
    /// The origin-form target: path and query, at least `/`.
    pub path_and_query: String,
}

impl AbsoluteUri {
    /// Parses a request-target; anything but an `http://` URI is a `400` saying why.
    pub fn parse(text: &str) -> Result<AbsoluteUri, ProxyError> {
        let bad =
            |why: &str| ProxyError::BadRequest(format!("invalid request target \"{text}\": {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad(
                "a forward proxy needs an absolute URI such as http://host/path",
            ));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(ProxyError::BadRequest(
                "https:// URLs go through a CONNECT tunnel: configure this proxy as the HTTPS proxy \
                 (curl -x, https_proxy) and the client will send CONNECT"
                    .into(),
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only the http scheme is forwarded"));
        }
        if rest.contains('#') {
            return Err(bad("a fragment is not allowed"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let target = Target::parse_host_port(authority, Some(80)).map_err(bad)?;
        let path_and_query = match path.as_bytes().first() {
            None => "/".to_string(),
            Some(b'?') => format!("/{path}"),
            Some(_) => path.to_string(),
        };
        Ok(AbsoluteUri {
            target,
            authority: authority.to_string(),
            path_and_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Host;

    #[test]
    fn splits_authority_and_path() {
        let uri = AbsoluteUri::parse("http://Example.org:8080/a/b?q=1").unwrap();
        assert_eq!(uri.target.host, Host::Name("example.org".into()));
        assert_eq!(uri.target.port, 8080);
        assert_eq!(uri.authority, "Example.org:8080");
        assert_eq!(uri.path_and_query, "/a/b?q=1");
        let uri = AbsoluteUri::parse("HTTP://127.0.0.1").unwrap();
        assert_eq!(uri.target.port, 80);
        assert_eq!(uri.path_and_query, "/");
        assert_eq!(
            AbsoluteUri::parse("http://h?x").unwrap().path_and_query,
            "/?x"
        );
        assert_eq!(
            AbsoluteUri::parse("http://[::1]:81/").unwrap().target.port,
            81
        );
        assert_eq!(AbsoluteUri::parse("http://h:/").unwrap().target.port, 80);
    }

    #[test]
    fn refuses_other_targets() {
        for bad in [
            "/path",
            "*",
            "https://example.org/",
            "ftp://example.org/",
            "http://user:pw@example.org/",
            "http:///path",
            "http://exa mple/",
            "http://h:0/",
            "http://h:99999/",
            "http://h/#frag",
        ] {
            assert!(AbsoluteUri::parse(bad).is_err(), "{bad} was accepted");
        }
        let https = AbsoluteUri::parse("https://example.org/")
            .unwrap_err()
            .to_string();
        assert!(https.contains("CONNECT"), "{https}");
    }
}
