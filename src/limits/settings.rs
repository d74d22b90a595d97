//! `max_connections`, over the whole process, `max_connections_per_client`, per server, and
//! the bandwidth limits.

use crate::config::directive::{HTTP_SERVER, HTTP_SERVER_USERS, MAIN_HTTP, Spec};
use crate::config::values::parse_size;
use crate::config::{ConfigError, Cx, Directive};

/// `max_connections`, process-wide.
pub const PROCESS_DIRECTIVES: &[Spec] = &[Spec::used("max_connections", MAIN_HTTP, (1, 1), true)];

/// `max_connections_per_client`, per server.
pub const SERVER_DIRECTIVES: &[Spec] = &[Spec::used(
    "max_connections_per_client",
    HTTP_SERVER,
    (1, 1),
    true,
)];

/// Applies `max_connections` or `max_connections_per_client`: a positive count.
pub fn set(
    cx: &mut Cx,
    directive: &Directive,
    limit: &mut Option<usize>,
) -> Result<(), ConfigError> {
    *limit = Some(cx.count(directive)?);
    Ok(())
}

/// `limit_rate*`: bandwidth limits, at http or server level or in a `users` block.
pub const RATE_DIRECTIVES: &[Spec] = &[
    Spec::used("limit_rate", HTTP_SERVER_USERS, (1, 1), true),
    Spec::used("limit_rate_after", HTTP_SERVER_USERS, (1, 1), true),
    Spec::used("limit_rate_per_client", HTTP_SERVER_USERS, (1, 1), true),
    Spec::used("limit_rate_per_user", HTTP_SERVER_USERS, (1, 1), true),
];

/// Bytes per second (`0` is off), by what shares them; see [`super::rate`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// `limit_rate`: each direction of each connection, each forwarded response.
    pub per_connection: u64,
    /// `limit_rate_after`: bytes each of those moves before the limits apply.
    pub after: u64,
    /// `limit_rate_per_client`: every connection of one client address together.
    pub per_client: u64,
    /// `limit_rate_per_user`: every connection of one authenticated user together.
    pub per_user: u64,
}

impl Rates {
    /// Applies one of [`RATE_DIRECTIVES`]: a size in nginx units (`512k`, `4m`), `0` for off.
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        let arg = directive.args[0].as_str();
        let value = parse_size(arg).map(|n| n as u64).ok_or_else(|| {
            cx.error(
                directive,
                format!(
                    "invalid value \"{arg}\" in \"{}\" directive (bytes, or k, m, g units)",
                    directive.name
                ),
            )
        })?;
        match directive.name.as_str() {
            "limit_rate" => self.per_connection = value,
            "limit_rate_after" => self.after = value,
            "limit_rate_per_client" => self.per_client = value,
            "limit_rate_per_user" => self.per_user = value,
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }
}
