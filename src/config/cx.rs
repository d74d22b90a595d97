//! What a directive handler is given besides its directive: the file being read, the warnings
//! so far, errors worded with `file:line`, readers for the argument kinds many directives share,
//! and a place for a module's state while the file is read (`log_format`s, say).

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::directive::Spec;
use super::error::{ConfigError, Origin};
use super::syntax::Directive;
use super::values::{PortList, parse_flag, parse_port, parse_time};

/// The longest time any directive accepts.
pub const MAX_TIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The state of one reading of a configuration file.
pub struct Cx<'a> {
    /// The name errors are reported under.
    pub file: &'a str,
    /// Directives that were accepted but do nothing, worded for the operator.
    pub warnings: Vec<String>,
    /// Every module's directives.
    pub(super) registry: &'a [&'static [Spec]],
    /// The marks of the level being applied (see [`Cx::first_in_level`]).
    level: HashSet<&'static str>,
    /// Each module's state while the file is read, by type.
    state: HashMap<TypeId, Box<dyn Any>>,
}

impl<'a> Cx<'a> {
    /// Reading `file`, whose directives are declared in `registry`.
    pub fn new(file: &'a str, registry: &'a [&'static [Spec]]) -> Cx<'a> {
        Cx {
            file,
            warnings: Vec::new(),
            registry,
            level: HashSet::new(),
            state: HashMap::new(),
        }
    }

    pub fn origin(&self, line: u32) -> Origin {
        Origin {
            file: self.file.to_string(),
            line,
        }
    }

    /// An error at the directive's line.
    pub fn error(&self, directive: &Directive, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, directive.line, message)
    }

    /// For a directive its handler does not take: a gap in a module's tables, reported as
    /// an error rather than a panic.
    pub fn not_allowed(&self, directive: &Directive) -> ConfigError {
        self.error(
            directive,
            format!("\"{}\" directive is not allowed here", directive.name),
        )
    }

    /// A warning about the directive; `in file:line` is added.
    pub fn warn(&mut self, directive: &Directive, message: impl std::fmt::Display) {
        let origin = self.origin(directive.line);
        self.warn_at(&origin, message);
    }

    /// A warning about what was written at `origin`, once more than its directive is known.
    pub fn warn_at(&mut self, origin: &Origin, message: impl std::fmt::Display) {
        self.warnings.push(format!("{message} in {origin}"));
    }

    pub(super) fn start_level(&mut self) {
        self.level.clear();
    }

    /// True the first time `mark` is asked for in the level being applied, false after.
    ///
    /// A level starts as a copy of the level above it; this is how a list directive keeps
    /// nginx's rule that a level with any entry of its own inherits none from above: its
    /// first entry replaces the inherited list.
    pub fn first_in_level(&mut self, mark: &'static str) -> bool {
        self.level.insert(mark)
    }

    /// Whether `mark` was set in the level being applied.
    pub fn in_level(&self, mark: &'static str) -> bool {
        self.level.contains(mark)
    }

    /// The state of type `T` kept for this reading, created on first use.
    pub fn state<T: Default + 'static>(&mut self) -> &mut T {
        self.state
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("kept by its own type")
    }

    /// A path as written, relative ones taken from the config file's directory.
    pub fn relative_path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        match Path::new(self.file).parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The directive's first argument as a time (see [`Cx::time_arg`]).
    pub fn time(&self, directive: &Directive) -> Result<Duration, ConfigError> {
        self.time_arg(directive, 0)
    }

    /// A time between 1 ms and [`MAX_TIME`], in nginx's message style when it is not one.
    /// The bound keeps deadlines computed from it far from overflowing.
    pub fn time_arg(&self, directive: &Directive, index: usize) -> Result<Duration, ConfigError> {
        let text = &directive.args[index];
        match parse_time(text) {
            Some(time) if !time.is_zero() && time <= MAX_TIME => Ok(time),
            _ => Err(self.error(
                directive,
                format!(
                    "\"{}\" directive invalid value \"{text}\" (a time from 1ms to 365d such as 500ms, 30s, 5m or 1h is needed)",
                    directive.name
                ),
            )),
        }
    }

    /// The directive's first argument as `on` or `off`.
    pub fn flag(&self, directive: &Directive) -> Result<bool, ConfigError> {
        let text = &directive.args[0];
        parse_flag(text).ok_or_else(|| {
            self.error(
                directive,
                format!(
                    "invalid value \"{text}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                    directive.name
                ),
            )
        })
    }

    /// The directive's first argument as a positive count, such as a connection limit.
    pub fn count(&self, directive: &Directive) -> Result<usize, ConfigError> {
        let text = &directive.args[0];
        text.parse::<usize>()
            .ok()
            .filter(|&n| n > 0 && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                self.error(
                    directive,
                    format!(
                        "invalid value \"{text}\" in \"{}\" directive",
                        directive.name
                    ),
                )
            })
    }

    /// The arguments as `all`, or ports and ranges. Every argument is checked, `all` or not,
    /// so a typo beside `all` still fails `-t`.
    pub fn port_list(&self, directive: &Directive) -> Result<PortList, ConfigError> {
        let mut ranges = Vec::new();
        let mut all = false;
        for arg in &directive.args {
            let invalid = || {
                self.error(
                    directive,
                    format!("invalid port \"{arg}\" in \"{}\" directive", directive.name),
                )
            };
            let range = match arg.split_once('-') {
                _ if arg == "all" => {
                    all = true;
                    continue;
                }
                Some((lo, hi)) => {
                    let (lo, hi) = (
                        parse_port(lo).ok_or_else(invalid)?,
                        parse_port(hi).ok_or_else(invalid)?,
                    );
                    if lo > hi {
                        return Err(invalid());
                    }
                    (lo, hi)
                }
                None => {
                    let port = parse_port(arg).ok_or_else(invalid)?;
                    (port, port)
                }
            };
            ranges.push(range);
        }
        Ok(if all {
            PortList::All
        } else {
            PortList::Ranges(ranges)
        })
    }
}
