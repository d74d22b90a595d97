//! How long and how much a client may take: nginx core's `client_*` timeouts, `send_timeout`,
//! `keepalive_timeout`, `large_client_header_buffers` and `underscores_in_headers`, set per
//! server.

use std::time::Duration;

use super::Limits;
use crate::config::directive::{HTTP_SERVER, Spec};
use crate::config::values::parse_size;
use crate::config::{ConfigError, Cx, Directive};

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("client_header_timeout", HTTP_SERVER, (1, 1), true),
    Spec::used("client_body_timeout", HTTP_SERVER, (1, 1), true),
    Spec::used("send_timeout", HTTP_SERVER, (1, 1), true),
    Spec::used("keepalive_timeout", HTTP_SERVER, (1, 2), true),
    Spec::used("large_client_header_buffers", HTTP_SERVER, (2, 2), true),
    Spec::used("underscores_in_headers", HTTP_SERVER, (1, 1), true),
];

/// The bounds a server puts on its clients.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `client_header_timeout` — time allowed to receive a whole request head.
    pub header_timeout: Duration,
    /// `keepalive_timeout` — how long an idle client connection waits for its next request.
    pub keepalive_timeout: Duration,
    /// `client_body_timeout` — longest pause between two reads of a request body.
    pub body_timeout: Duration,
    /// `send_timeout` — longest pause between two writes of a response to the client.
    pub send_timeout: Duration,
    /// `large_client_header_buffers`: request head size limits.
    pub limits: Limits,
    /// `underscores_in_headers` — keep request fields whose names contain `_` (off: dropped,
    /// so an origin that reads `_` as `-` never sees a second `Content-Length`).
    pub underscores_in_headers: bool,
}

impl Default for ClientSettings {
    /// nginx's defaults.
    fn default() -> Self {
        ClientSettings {
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            underscores_in_headers: false,
        }
    }
}

impl ClientSettings {
    /// Applies one of [`DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        match directive.name.as_str() {
            "client_header_timeout" => self.header_timeout = cx.time(directive)?,
            "client_body_timeout" => self.body_timeout = cx.time(directive)?,
            "send_timeout" => self.send_timeout = cx.time(directive)?,
            "keepalive_timeout" => {
                self.keepalive_timeout = cx.time(directive)?;
                // nginx's optional second argument sets `Keep-Alive: timeout=`; sluice sends no
                // Keep-Alive field, but a bad value is still an error.
                if directive.args.len() == 2 {
                    cx.time_arg(directive, 1)?;
                }
            }
            "large_client_header_buffers" => {
                let number = cx.count(directive)?;
                let size = parse_size(&directive.args[1])
                    .filter(|&s| (1024..=1 << 20).contains(&s))
                    .ok_or_else(|| {
                        cx.error(
                            directive,
                            format!(
                                "invalid size \"{}\" in \"large_client_header_buffers\" (1k to 1m)",
                                directive.args[1]
                            ),
                        )
                    })?;
                self.limits = Limits {
                    line: size,
                    header_line: size,
                    head: number.saturating_mul(size).min(1 << 20),
                };
            }
            "underscores_in_headers" => self.underscores_in_headers = cx.flag(directive)?,
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }
}
