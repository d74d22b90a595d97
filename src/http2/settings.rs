//! The HTTP/2 directives: `http2` and `http2_max_concurrent_streams` (nginx's names). The
//! `http2` parameter of `listen` turns it on too (see [`crate::settings`]); an idle HTTP/2
//! connection is closed after `keepalive_timeout`, as in nginx since 1.19.7.

use crate::config::directive::{HTTP_SERVER, Spec};
use crate::config::{ConfigError, Cx, Directive};

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("http2", HTTP_SERVER, (1, 1), true),
    Spec::used("http2_max_concurrent_streams", HTTP_SERVER, (1, 1), true),
];

/// nginx's HTTP/2 directives made obsolete in 1.19.7, accepted with a warning so that a
/// pasted block loads.
pub const OBSOLETE: &[Spec] = &[
    Spec::ignored(
        "http2_idle_timeout",
        false,
        "obsolete since nginx 1.19.7: keepalive_timeout closes an idle HTTP/2 connection",
    ),
    Spec::ignored(
        "http2_recv_timeout",
        false,
        "obsolete since nginx 1.19.7: client_header_timeout bounds the connection preface",
    ),
    Spec::ignored(
        "http2_max_requests",
        false,
        "obsolete since nginx 1.19.7; sluice does not limit requests per connection",
    ),
    Spec::ignored(
        "http2_max_field_size",
        false,
        "obsolete since nginx 1.19.7: large_client_header_buffers bounds HTTP/2 headers",
    ),
    Spec::ignored(
        "http2_max_header_size",
        false,
        "obsolete since nginx 1.19.7: large_client_header_buffers bounds HTTP/2 headers",
    ),
];

/// The most streams a client may have open at once on one connection when
/// `http2_max_concurrent_streams` does not say (nginx's default).
const DEFAULT_MAX_STREAMS: u32 = 128;

/// A server's HTTP/2 settings.
#[derive(Debug, Clone)]
pub struct Http2Settings {
    /// `http2 on`, or `listen ... http2` on one of the server's addresses.
    pub enabled: bool,
    /// `http2_max_concurrent_streams`: streams open at once on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for Http2Settings {
    fn default() -> Http2Settings {
        Http2Settings {
            enabled: false,
            max_concurrent_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

impl Http2Settings {
    /// Applies one of [`DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        let arg = directive.args[0].as_str();
        match directive.name.as_str() {
            "http2" => self.enabled = cx.flag(directive)?,
            "http2_max_concurrent_streams" => {
                let count = cx.count(directive)?;
                // SETTINGS_MAX_CONCURRENT_STREAMS is 31 bits in practice (stream ids are).
                if count > (1 << 20) {
                    return Err(cx.error(
                        directive,
                        format!(
                            "invalid value \"{arg}\" in \"http2_max_concurrent_streams\" directive (1 to 1048576)"
                        ),
                    ));
                }
                self.max_concurrent_streams = count as u32;
            }
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Config;

    fn parse(server: &str) -> Result<Config, String> {
        let text = format!("server {{\n    listen 127.0.0.1:0{server}\n}}\n");
        Config::parse(text.as_bytes(), "proxy.conf").map_err(|e| e.to_string())
    }

    #[test]
    fn http2_is_off_unless_the_block_or_a_listen_says_so() {
        let http2 = |server: &str| parse(server).unwrap().servers[0].http2.clone();
        assert!(!http2(";").enabled);
        assert!(http2(";\n    http2 on;").enabled);
        assert!(http2(" http2;").enabled);
        let streams = http2(";\n    http2_max_concurrent_streams 16;");
        assert_eq!(streams.max_concurrent_streams, 16);
        assert_eq!(http2(";").max_concurrent_streams, 128);
        // nginx's obsolete HTTP/2 directives load with a warning.
        let config = parse(";\n    http2_idle_timeout 3m;").unwrap();
        assert!(
            config.warnings[0].contains("keepalive_timeout"),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn bad_values_name_their_line() {
        let error = parse(";\n    http2 yes;").unwrap_err();
        assert!(
            error.contains("proxy.conf:3") && error.contains("\"on\" or \"off\""),
            "{error}"
        );
        let error = parse(";\n    http2_max_concurrent_streams 0;").unwrap_err();
        assert!(error.contains("proxy.conf:3"), "{error}");
        let error = parse(";\n    http2_max_concurrent_streams 9999999;").unwrap_err();
        assert!(error.contains("proxy.conf:3"), "{error}");
    }
}
