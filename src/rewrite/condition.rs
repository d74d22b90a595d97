//! `if (CONDITION)`: nginx's conditions on variables, parsed when the file is read.

use std::time::SystemTime;

use regex::Regex;

use crate::access_log::Entry;
use crate::template::Template;
use crate::variables::{self, Declared, Var};

/// One `if` condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `($var)`: true unless empty or `0`.
    Set(Template<Var>),
    /// `($var = text)`, `($var != text)`.
    Equals {
        left: Template<Var>,
        right: Template<Var>,
        negate: bool,
    },
    /// `($var ~ regex)`, `~*`, `!~`, `!~*`; a match sets `$1` … `$9`.
    Matches {
        left: Template<Var>,
        regex: Regex,
        negate: bool,
    },
}

impl Condition {
    /// Parses the arguments of `if`, parentheses included. The error is the reason only.
    pub fn parse(args: &[String], declared: &Declared) -> Result<Condition, String> {
        let shown = args.join(" ");
        let invalid = || format!("invalid condition \"{shown}\"");
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        let first = args.first().copied().unwrap_or_default();
        match first.strip_prefix('(') {
            Some("") => {
                args.remove(0);
            }
            Some(rest) => args[0] = rest,
            None => return Err(invalid()),
        }
        let last = args.last().copied().unwrap_or_default();
        match last.strip_suffix(')') {
            Some("") => {
                args.pop();
            }
            Some(rest) => *args.last_mut().expect("not empty") = rest,
            None => return Err(invalid()),
        }
        let template = |text: &str| variables::parse(text, declared);
        match args.as_slice() {
            [flag, ..] if ["-f", "!-f", "-d", "!-d", "-e", "!-e", "-x", "!-x"].contains(flag) => {
                Err(format!(
                    "the file test \"{flag}\" in \"if\" is not supported: a forward proxy serves no files"
                ))
            }
            [var] => Ok(Condition::Set(template(var)?)),
            [left, op, right] => {
                let left = template(left)?;
                match *op {
                    "=" | "!=" => Ok(Condition::Equals {
                        left,
                        right: template(right)?,
                        negate: *op == "!=",
                    }),
                    "~" | "~*" | "!~" | "!~*" => Ok(Condition::Matches {
                        left,
                        regex: super::regex::compile(right, op.ends_with('*'))?,
                        negate: op.starts_with('!'),
                    }),
                    _ => Err(format!("unexpected \"{op}\" in condition")),
                }
            }
            _ => Err(invalid()),
        }
    }

    /// Whether the condition holds for this request. A regular expression that matches
    /// leaves its captures in the request's variables, as nginx does.
    pub fn holds(&self, entry: &mut Entry) -> bool {
        match self {
            Condition::Set(var) => {
                let value = variables::render(var, entry);
                !value.is_empty() && value != "0"
            }
            Condition::Equals {
                left,
                right,
                negate,
            } => (variables::render(left, entry) == variables::render(right, entry)) != *negate,
            Condition::Matches {
                left,
                regex,
                negate,
            } => {
                let value = variables::render(left, entry);
                let captures = regex.captures(&value).map(|c| {
                    c.iter()
                        .map(|m| m.map(|m| m.as_str().to_string()))
                        .collect()
                });
                let matched = captures.is_some();
                if let Some(captures) = captures {
                    entry.vars.captures = captures;
                }
                matched != *negate
            }
        }
    }
}

/// Renders a template with `captures` standing for `$0` … `$9` (a `map`'s own match).
pub fn render_with(
    template: &Template<Var>,
    entry: &Entry,
    now: SystemTime,
    captures: &[Option<String>],
) -> String {
    let mut out = Vec::new();
    template.render_bytes(&mut out, |var, out| match var {
        Var::Capture(n) => {
            if let Some(Some(text)) = captures.get(*n) {
                out.extend_from_slice(text.as_bytes());
            }
        }
        other => {
            other.value(entry, now, out);
        }
    });
    String::from_utf8_lossy(&out).into_owned()
}
