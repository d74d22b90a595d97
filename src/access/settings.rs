//! The access directives: `allow` / `deny` for clients, `auth_basic` and its user file, and
//! `destination_allow` / `destination_deny`.
//!
//! They apply to every request of a server, CONNECT included, so they stand in `http` or
//! `server`; in a `location` they are refused with that explanation rather than ignored.

use std::net::IpAddr;

use super::ClientRules;
use super::cidr::Cidr;
use super::destination::{DestinationRule, DestinationRules, HostPattern, Matcher};
use super::htpasswd::Users;
use crate::config::directive::{Context, HTTP_SERVER_LOCATION, HTTP_SERVER_USERS, MANY, Spec};
use crate::config::values::{SPLITS_A_LINE, splits_a_line};
use crate::config::{ConfigError, Cx, Directive};

/// Why a location refuses them.
const SERVER_WIDE: &str = "in a location is not supported: sluice applies it to every request \
                           of the server, CONNECT included; move it to the server block";

pub const DIRECTIVES: &[Spec] = &[
    Spec::used("allow", HTTP_SERVER_LOCATION, (1, 1), false)
        .refused_in(Context::Location, SERVER_WIDE),
    Spec::used("deny", HTTP_SERVER_LOCATION, (1, 1), false)
        .refused_in(Context::Location, SERVER_WIDE),
    Spec::used("auth_basic", HTTP_SERVER_LOCATION, (1, 1), true)
        .refused_in(Context::Location, SERVER_WIDE),
    Spec::used("auth_basic_user_file", HTTP_SERVER_LOCATION, (1, 1), true)
        .refused_in(Context::Location, SERVER_WIDE),
    Spec::used("destination_allow", HTTP_SERVER_USERS, (1, MANY), false),
    Spec::used("destination_deny", HTTP_SERVER_USERS, (1, MANY), false),
    Spec::used("destination_mode", HTTP_SERVER_USERS, (1, 1), true),
];

/// Who may use a server and where they may go. A server starts with its `http` block's.
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// `allow` / `deny`: which clients may use this server.
    pub clients: ClientRules,
    /// `destination_allow` / `destination_deny`: where they may go.
    pub destinations: DestinationRules,
    /// `auth_basic` realm; `None` is `off`.
    pub auth_realm: Option<String>,
    /// `auth_basic_user_file`, read when the configuration is.
    pub auth_users: Option<Users>,
}

impl AccessSettings {
    /// Applies one of [`DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        let arg = directive.args[0].as_str();
        match directive.name.as_str() {
            "allow" | "deny" => {
                if cx.first_in_level("allow") {
                    self.clients = ClientRules::default();
                }
                let range = match arg {
                    "all" => None,
                    _ => Some(Cidr::parse(arg).map_err(|why| {
                        cx.error(directive, format!("invalid parameter \"{arg}\" ({why})"))
                    })?),
                };
                self.clients
                    .push(directive.name == "allow", range, cx.origin(directive.line));
            }
            "destination_allow" | "destination_deny" | "destination_mode" => {
                destinations(cx, directive, &mut self.destinations)?;
            }
            "auth_basic" => {
                // The realm is sent in every `Proxy-Authenticate` header.
                if splits_a_line(arg) {
                    return Err(cx.error(
                        directive,
                        format!("invalid realm in \"auth_basic\" directive: {SPLITS_A_LINE}"),
                    ));
                }
                self.auth_realm = (arg != "off").then(|| arg.to_string());
            }
            "auth_basic_user_file" => {
                let path = cx.relative_path(arg);
                let (users, warnings) = Users::load(&path).map_err(|error| {
                    cx.error(
                        directive,
                        format!("in the \"auth_basic_user_file\" directive: {error}"),
                    )
                })?;
                cx.warnings.extend(warnings);
                self.auth_users = Some(users);
            }
            _ => return Err(cx.not_allowed(directive)),
        }
        Ok(())
    }

    /// Any client that reaches the server may use it: no closed `allow`/`deny` list, no
    /// `auth_basic`.
    pub fn admits_anyone(&self) -> bool {
        !self.clients.is_closed() && self.auth_realm.is_none()
    }

    /// What a whole server block still lacks, checked once its block is read.
    pub fn incomplete(&self) -> Option<&'static str> {
        (self.auth_realm.is_some() && self.auth_users.is_none()).then_some(
            "\"auth_basic\" needs \"auth_basic_user_file\" in the same server block or above it",
        )
    }
}

/// Applies `destination_allow`, `destination_deny` or `destination_mode` to `rules` (a
/// server's or a `users` block's). A level's first rule replaces the inherited ones; the mode
/// is inherited on its own.
pub fn destinations(
    cx: &mut Cx,
    directive: &Directive,
    rules: &mut DestinationRules,
) -> Result<(), ConfigError> {
    if directive.name == "destination_mode" {
        rules.report = match directive.args[0].as_str() {
            "enforce" => false,
            "report" => true,
            other => {
                return Err(cx.error(
                    directive,
                    format!("invalid value \"{other}\" in \"destination_mode\" directive, it must be \"enforce\" or \"report\""),
                ));
            }
        };
        return Ok(());
    }
    if cx.first_in_level("destination_allow") {
        rules.clear();
    }
    for arg in &directive.args {
        let matcher = destination(cx, directive, arg)?;
        rules.push(DestinationRule {
            allow: directive.name == "destination_allow",
            matcher,
            origin: cx.origin(directive.line),
        });
    }
    Ok(())
}

/// One argument of `destination_allow` / `destination_deny`: `all`, an address or CIDR, or
/// a host pattern (`example.com`, `*.example.com`, `.example.com`).
fn destination(cx: &Cx, directive: &Directive, arg: &str) -> Result<Matcher, ConfigError> {
    if arg == "all" {
        return Ok(Matcher::All);
    }
    let looks_numeric = arg.contains('/') || arg.contains(':') || arg.parse::<IpAddr>().is_ok();
    if looks_numeric {
        return Cidr::parse(arg).map(Matcher::Addr).map_err(|why| {
            cx.error(
                directive,
                format!(
                    "invalid address \"{arg}\" in \"{}\" directive ({why})",
                    directive.name
                ),
            )
        });
    }
    let bare = arg
        .strip_prefix("*.")
        .or_else(|| arg.strip_prefix('.'))
        .unwrap_or(arg);
    let valid = !bare.is_empty()
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(cx.error(
            directive,
            format!(
                "invalid host pattern \"{arg}\" in \"{}\" directive",
                directive.name
            ),
        ));
    }
    Ok(Matcher::Host(HostPattern::parse(arg)))
}
