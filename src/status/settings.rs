//! `status_listen`: where the status listener serves, process-wide; off by default.

use std::net::SocketAddr;

use crate::config::directive::{MAIN_HTTP, Spec};
use crate::config::{ConfigError, Cx, Directive, Origin};

pub const DIRECTIVES: &[Spec] = &[Spec::used("status_listen", MAIN_HTTP, (1, 1), true)];

/// `status_listen ADDR:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListen {
    pub addr: SocketAddr,
    pub origin: Origin,
}

/// `status_listen ADDR:PORT`: an address literal and a port, as in `127.0.0.1:9145`. Once in
/// the whole file, main and `http` together.
pub fn set(
    cx: &mut Cx,
    directive: &Directive,
    status: &mut Option<StatusListen>,
) -> Result<(), ConfigError> {
    let text = &directive.args[0];
    let addr: SocketAddr = text.parse().map_err(|_| {
        cx.error(
            directive,
            format!(
                "invalid address \"{text}\" in \"status_listen\" directive \
                 (an IP address and a port, such as 127.0.0.1:9145 or [::1]:9145, is needed)"
            ),
        )
    })?;
    if status.is_some() {
        return Err(cx.error(directive, "\"status_listen\" directive is duplicate"));
    }
    *status = Some(StatusListen {
        addr,
        origin: cx.origin(directive.line),
    });
    Ok(())
}
