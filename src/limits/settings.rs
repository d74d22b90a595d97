//! `max_connections`, over the whole process, and `max_connections_per_client`, per server.

use crate::config::directive::{HTTP_SERVER, MAIN_HTTP, Spec};
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
