//! The access log directives: `log_format` (read before the rest, so an `access_log` may name
//! a format defined anywhere) and `access_log`, at any level, a level with its own replacing
//! its parent's.

use std::collections::HashMap;
use std::sync::Arc;

use super::{AccessLog, Destination, Escape, LogFormat, Sink};
use crate::config::directive::{HTTP_SERVER_LOCATION, MAIN_HTTP, MANY, Spec};
use crate::config::values::{parse_size, parse_time};
use crate::config::{ConfigError, Cx, Directive};

/// `log_format`, which is process-wide.
pub const FORMAT_DIRECTIVES: &[Spec] = &[
    // In nginx, http only; servers may stand at the top level in sluice, so main too.
    Spec::used("log_format", MAIN_HTTP, (2, MANY), false).read_first(),
];

/// `access_log`, set per level.
pub const DIRECTIVES: &[Spec] = &[Spec::used(
    "access_log",
    HTTP_SERVER_LOCATION,
    (1, MANY),
    false,
)];

/// The `log_format`s of the file being read, by name, the predefined ones included.
struct Formats(HashMap<String, Arc<LogFormat>>);

impl Default for Formats {
    fn default() -> Self {
        Formats(HashMap::from([
            ("combined".to_string(), Arc::new(LogFormat::combined())),
            ("sluice".to_string(), Arc::new(LogFormat::sluice())),
        ]))
    }
}

/// `log_format NAME [escape=...] STRING...`: a named format for `access_log`.
pub fn log_format(cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
    let name = &directive.args[0];
    if cx.state::<Formats>().0.contains_key(name) {
        return Err(cx.error(
            directive,
            format!("duplicate \"log_format\" name \"{name}\""),
        ));
    }
    let mut strings = &directive.args[1..];
    let mut escape = Escape::Default;
    if let Some(value) = strings[0].strip_prefix("escape=") {
        escape = Escape::parse(value).ok_or_else(|| {
            cx.error(
                directive,
                format!("unknown log format escaping \"{value}\""),
            )
        })?;
        strings = &strings[1..];
    }
    if strings.is_empty() {
        return Err(cx.error(
            directive,
            "invalid number of arguments in \"log_format\" directive",
        ));
    }
    let format = LogFormat::parse_declared(
        name,
        escape,
        &strings.concat(),
        cx.state::<crate::variables::Declared>(),
    )
    .map_err(|reason| cx.error(directive, reason))?;
    cx.state::<Formats>()
        .0
        .insert(name.clone(), Arc::new(format));
    Ok(())
}

impl AccessLog {
    /// `access_log PATH [FORMAT] [buffer=SIZE] [flush=TIME]` or `access_log off`. A level
    /// starts with its parent's logs; its first `access_log` replaces them, and an `off`
    /// anywhere in the level leaves it with none.
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        if cx.first_in_level("access_log") {
            *self = AccessLog::default();
        }
        let args = &directive.args;
        let path = args[0].as_str();
        if path == "off" {
            if args.len() > 1 {
                return Err(cx.error(directive, format!("invalid parameter \"{}\"", args[1])));
            }
            cx.first_in_level("access_log off");
            *self = AccessLog::default();
            return Ok(());
        }
        let destination = match path {
            "stderr" => Destination::Stderr,
            _ if path.starts_with("syslog:") => {
                return Err(cx.error(directive, "logging to syslog is not supported; log to \"stderr\" and let the service manager collect it"));
            }
            _ if path.contains('$') => {
                return Err(cx.error(
                    directive,
                    "variables in \"access_log\" paths are not supported",
                ));
            }
            _ => Destination::File(cx.relative_path(path)),
        };
        let mut format = cx.state::<Formats>().0.get("combined").cloned();
        for (index, arg) in args.iter().enumerate().skip(1) {
            let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
            match key {
                "buffer" if parse_size(value).is_some_and(|s| s > 0) => {}
                "flush" if parse_time(value).is_some_and(|t| !t.is_zero()) => {}
                "gzip" | "if" => {
                    return Err(cx.error(
                        directive,
                        format!("the \"{key}\" parameter of \"access_log\" is not supported"),
                    ));
                }
                _ if index == 1 && !arg.contains('=') => {
                    let named = cx.state::<Formats>().0.get(arg.as_str()).cloned();
                    format = Some(named.ok_or_else(|| {
                        cx.error(directive, format!("unknown log format \"{arg}\""))
                    })?);
                }
                _ => return Err(cx.error(directive, format!("invalid parameter \"{arg}\""))),
            }
        }
        if !cx.in_level("access_log off") {
            self.sinks.push(Sink {
                destination: Arc::new(destination),
                format: format.expect("combined is predefined"),
                origin: cx.origin(directive.line),
            });
        }
        Ok(())
    }
}
