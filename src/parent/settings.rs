//! `parent NAME { server HOST:PORT [max_fails=N] [fail_timeout=T] [backup] [ssl];
//! credentials_file PATH; ssl_trusted_certificate PATH; }`
//! in the main context or `http`: a parent proxy that `route` rules may name.
//!
//! Parent blocks are read before any server (see [`define`]), so a `route` may name a parent
//! wherever it is written. The block's own directives are read here: its `server` is not the
//! `server { }` block of the walker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Parent, ParentServer, ParentTls};
use crate::config::directive::{MAIN_HTTP, Spec};
use crate::config::values::parse_time;
use crate::config::{ConfigError, Cx, Directive, read_config_file};
use crate::target::Target;

/// `parent` blocks: checked by the walker, applied by [`define`] before it.
pub const DIRECTIVES: &[Spec] = &[Spec::block("parent", MAIN_HTTP, (1, 1)).read_first()];

/// nginx's `max_fails` default.
const MAX_FAILS: u32 = 1;
/// nginx's `fail_timeout` default.
const FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// The parents of the file being read, by name.
#[derive(Default)]
pub struct Parents(pub HashMap<String, Arc<Parent>>);

/// Reads one `parent` block into the parents of this reading.
pub fn define(cx: &mut Cx, block: &Directive) -> Result<(), ConfigError> {
    let (Some(body), [name]) = (block.block.as_deref(), block.args.as_slice()) else {
        return Err(cx.error(block, "\"parent\" takes one name and a { } block"));
    };
    if name == "direct" || name == "default" {
        return Err(cx.error(block, format!("\"{name}\" cannot name a parent")));
    }
    if cx.state::<Parents>().0.contains_key(name) {
        return Err(cx.error(block, format!("duplicate parent \"{name}\"")));
    }
    let mut servers = Vec::new();
    let mut credentials = None;
    let mut trusted: Option<(std::path::PathBuf, &Directive)> = None;
    for directive in body {
        if directive.block.is_some() {
            return Err(cx.error(
                directive,
                format!("\"{}\" takes no block in \"parent\"", directive.name),
            ));
        }
        match directive.name.as_str() {
            "server" => servers.push(server(cx, directive)?),
            "credentials_file" => {
                if credentials.is_some() {
                    return Err(cx.error(directive, "\"credentials_file\" directive is duplicate"));
                }
                credentials = Some(credentials_file(cx, directive)?);
            }
            "ssl_trusted_certificate" => {
                let [path] = directive.args.as_slice() else {
                    return Err(cx.error(
                        directive,
                        "invalid number of arguments in \"ssl_trusted_certificate\" directive",
                    ));
                };
                if trusted.is_some() {
                    return Err(cx.error(
                        directive,
                        "\"ssl_trusted_certificate\" directive is duplicate",
                    ));
                }
                trusted = Some((cx.relative_path(path), directive));
            }
            other => {
                return Err(cx.error(
                    directive,
                    format!(
                        "unknown directive \"{other}\" in \"parent\" \
                         (server, credentials_file, ssl_trusted_certificate)"
                    ),
                ));
            }
        }
    }
    if servers.iter().all(|s| s.backup) {
        return Err(cx.error(
            block,
            format!("parent \"{name}\" has no primary \"server\""),
        ));
    }
    let tls = if servers.iter().any(|s| s.ssl) {
        let path = trusted.as_ref().map(|(path, _)| path.as_path());
        let tls = ParentTls::new(path).map_err(|why| match &trusted {
            Some((path, directive)) => cx.error(
                directive,
                format!(
                    "cannot load trusted certificate \"{}\": {why}",
                    path.display()
                ),
            ),
            None => cx.error(block, why),
        })?;
        Some(tls)
    } else {
        if let Some((_, directive)) = trusted {
            cx.warn(
                directive,
                "\"ssl_trusted_certificate\" is ignored: no \"server\" of this parent has \"ssl\"",
            );
        }
        None
    };
    let parent = Parent {
        name: name.clone(),
        servers,
        credentials,
        tls,
    };
    cx.state::<Parents>()
        .0
        .insert(name.clone(), Arc::new(parent));
    Ok(())
}

/// `server HOST:PORT [max_fails=N] [fail_timeout=T] [backup] [ssl];`
fn server(cx: &Cx, directive: &Directive) -> Result<ParentServer, ConfigError> {
    let Some((address, params)) = directive.args.split_first() else {
        return Err(cx.error(directive, "\"server\" in \"parent\" needs HOST:PORT"));
    };
    let target = Target::parse_host_port(address, None).map_err(|why| {
        cx.error(
            directive,
            format!("invalid parent server \"{address}\": {why} (HOST:PORT is needed)"),
        )
    })?;
    let mut server = ParentServer::new(target, MAX_FAILS, FAIL_TIMEOUT, false);
    for param in params {
        let bad = || cx.error(directive, format!("invalid parameter \"{param}\""));
        match param.split_once('=') {
            Some(("max_fails", n)) => server.max_fails = n.parse().map_err(|_| bad())?,
            Some(("fail_timeout", t)) => server.fail_timeout = parse_time(t).ok_or_else(bad)?,
            None if param == "backup" => server.backup = true,
            None if param == "ssl" => server.ssl = true,
            _ => return Err(bad()),
        }
    }
    Ok(server)
}

/// `credentials_file PATH`: one line `user:password`, sent as `Proxy-Authorization: Basic`.
/// Neither the line nor any part of it ever goes into an error.
fn credentials_file(cx: &Cx, directive: &Directive) -> Result<String, ConfigError> {
    let [path] = directive.args.as_slice() else {
        return Err(cx.error(
            directive,
            "invalid number of arguments in \"credentials_file\" directive",
        ));
    };
    let full = cx.relative_path(path);
    let text = read_config_file(&full).map_err(|e| {
        cx.error(
            directive,
            format!("cannot read credentials_file \"{}\": {e}", full.display()),
        )
    })?;
    let unusable = || {
        cx.error(
            directive,
            format!(
                "credentials_file \"{}\" must hold one line \"user:password\"",
                full.display()
            ),
        )
    };
    let text = String::from_utf8(text).map_err(|_| unusable())?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next().ok_or_else(unusable)?.trim_end_matches('\r');
    if lines.next().is_some() || !line.contains(':') || line.chars().any(char::is_control) {
        return Err(unusable());
    }
    Ok(format!("Basic {}", BASE64.encode(line)))
}
