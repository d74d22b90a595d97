//! `max_connections`, over the whole process, `max_connections_per_client`, per server, and
//! the bandwidth limits.

use crate::config::directive::{Context, HTTP_SERVER, MAIN_HTTP, Spec};
use crate::config::values::parse_size;
use crate::config::{ConfigError, Cx, Directive};
use crate::settings::Server;

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

/// Where the `limit_rate*` directives stand: a location (where nginx also takes
/// `limit_rate`) refuses them with the reason.
const RATE_CONTEXTS: &[Context] = &[
    Context::Http,
    Context::Server,
    Context::Location,
    Context::Users,
];

/// Why a location refuses them.
const PER_CONNECTION: &str = "in a location is not supported: sluice limits every tunnel and \
                              response of a server (or of a users block); move it to the server \
                              block";

/// `limit_rate*`: bandwidth limits, at http or server level or in a `users` block.
pub const RATE_DIRECTIVES: &[Spec] = &[
    Spec::used("limit_rate", RATE_CONTEXTS, (1, 1), true)
        .refused_in(Context::Location, PER_CONNECTION),
    Spec::used("limit_rate_after", RATE_CONTEXTS, (1, 1), true)
        .refused_in(Context::Location, PER_CONNECTION),
    Spec::used("limit_rate_per_client", RATE_CONTEXTS, (1, 1), true)
        .refused_in(Context::Location, PER_CONNECTION),
    Spec::used("limit_rate_per_user", RATE_CONTEXTS, (1, 1), true)
        .refused_in(Context::Location, PER_CONNECTION),
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

/// `limit_rate_per_user` in a server where no client is ever named (no `auth_basic`, no
/// `ssl_verify_client`) limits nobody: say so, at the server `block`, once it is read.
pub fn warn_if_no_user_is_named(cx: &mut Cx, block: &Directive, server: &Server) {
    if server.rates.per_user > 0
        && server.access.auth_realm.is_none()
        && !server.tls.asks_client_certificate()
    {
        cx.warn(
            block,
            "\"limit_rate_per_user\" has no effect here: no client is named (no auth_basic, \
             no ssl_verify_client),",
        );
    }
}
