//! `map SOURCE $variable { ... }`: a variable whose value is looked up from another's, when it
//! is first read in a request. Keys are exact (case-insensitive, as in nginx), host wildcards
//! with `hostnames`, or regular expressions (`~`, `~*`) whose captures the value may use.

use std::collections::HashMap;
use std::time::SystemTime;

use regex::Regex;

use super::condition::render_with;
use crate::access_log::Entry;
use crate::config::{ConfigError, Cx, Directive};
use crate::template::Template;
use crate::variables::{self, Declared, Var};

/// Every `map` of the file, by the variable each defines.
#[derive(Debug, Clone, Default)]
pub struct Maps(Vec<Map>);

impl Maps {
    pub fn get(&self, variable: &str) -> Option<&Map> {
        self.0.iter().find(|m| m.variable == variable)
    }
}

/// One `map` block.
#[derive(Debug, Clone)]
pub struct Map {
    variable: String,
    source: Template<Var>,
    /// Lower-cased keys.
    exact: HashMap<String, Template<Var>>,
    /// `hostnames`: `*.example.org` (subdomains) and `.example.org` (the name too), stored as
    /// the suffix `.example.org` and whether the bare name matches.
    leading: Vec<(String, bool, Template<Var>)>,
    /// `hostnames`: `www.example.*`, stored as the prefix `www.example.`.
    trailing: Vec<(String, Template<Var>)>,
    regexes: Vec<(Regex, Template<Var>)>,
    default: Option<Template<Var>>,
}

impl Map {
    /// The value for this request: exact key, then the longest leading wildcard, the longest
    /// trailing one, the regular expressions in order, then `default` (empty if none).
    pub fn evaluate(&self, entry: &Entry, now: SystemTime) -> Option<String> {
        let source = render_with(&self.source, entry, now, &entry.vars.captures);
        let key = source.to_ascii_lowercase();
        let host = key.strip_suffix('.').unwrap_or(&key);
        let no_captures: &[Option<String>] = &[];
        let found = self
            .exact
            .get(host)
            .or_else(|| {
                self.leading
                    .iter()
                    .filter(|(suffix, bare, _)| {
                        host.ends_with(suffix.as_str()) || (*bare && host == &suffix[1..])
                    })
                    .max_by_key(|(suffix, _, _)| suffix.len())
                    .map(|(_, _, value)| value)
            })
            .or_else(|| {
                self.trailing
                    .iter()
                    .filter(|(prefix, _)| host.starts_with(prefix.as_str()))
                    .max_by_key(|(prefix, _)| prefix.len())
                    .map(|(_, value)| value)
            });
        if let Some(value) = found {
            return Some(render_with(value, entry, now, no_captures));
        }
        for (regex, value) in &self.regexes {
            if let Some(captures) = regex.captures(&source) {
                let captures: Vec<Option<String>> = captures
                    .iter()
                    .map(|m| m.map(|m| m.as_str().to_string()))
                    .collect();
                return Some(render_with(value, entry, now, &captures));
            }
        }
        Some(match &self.default {
            Some(value) => render_with(value, entry, now, no_captures),
            None => String::new(),
        })
    }
}

/// `map SOURCE $variable { ... }`, added to `maps`.
pub fn define(cx: &mut Cx, directive: &Directive, maps: &mut Maps) -> Result<(), ConfigError> {
    let declared = std::mem::take(cx.state::<Declared>());
    let result = parse(cx, directive, &declared);
    *cx.state::<Declared>() = declared;
    let map = result?;
    if maps.get(&map.variable).is_some() {
        return Err(cx.error(
            directive,
            format!("the duplicate \"{}\" variable", map.variable),
        ));
    }
    maps.0.push(map);
    Ok(())
}

fn parse(cx: &Cx, directive: &Directive, declared: &Declared) -> Result<Map, ConfigError> {
    let error = |d: &Directive, why: String| cx.error(d, why);
    let source = variables::parse(&directive.args[0], declared).map_err(|e| error(directive, e))?;
    let variable = match directive.args[1].strip_prefix('$') {
        Some(name) if !name.is_empty() && Var::lookup(name).is_none() => name.to_string(),
        _ => {
            return Err(error(
                directive,
                format!("invalid variable name \"{}\"", directive.args[1]),
            ));
        }
    };
    let mut map = Map {
        variable,
        source,
        exact: HashMap::new(),
        leading: Vec::new(),
        trailing: Vec::new(),
        regexes: Vec::new(),
        default: None,
    };
    let body = directive.block.as_deref().unwrap_or_default();
    let hostnames = body
        .iter()
        .any(|d| d.name == "hostnames" && d.args.is_empty());
    for entry in body {
        let key = entry.name.as_str();
        match (key, entry.args.as_slice()) {
            ("hostnames" | "volatile", []) => continue,
            ("include", [_]) => {
                return Err(error(
                    entry,
                    "\"include\" in \"map\" is not supported yet; list the keys in the block"
                        .to_string(),
                ));
            }
            (_, [value]) if entry.block.is_none() => {
                let value = variables::parse(value, declared).map_err(|e| error(entry, e))?;
                add(&mut map, key, value, hostnames).map_err(|e| error(entry, e))?;
            }
            _ => {
                return Err(error(
                    entry,
                    format!("invalid number of the map parameters in \"{key}\""),
                ));
            }
        }
    }
    Ok(map)
}

/// One `KEY VALUE;` of a map.
fn add(map: &mut Map, key: &str, value: Template<Var>, hostnames: bool) -> Result<(), String> {
    let duplicate = || format!("conflicting parameter \"{key}\"");
    if key == "default" {
        if map.default.replace(value).is_some() {
            return Err(duplicate());
        }
        return Ok(());
    }
    if let Some(pattern) = key.strip_prefix('~') {
        let (pattern, caseless) = match pattern.strip_prefix('*') {
            Some(rest) => (rest, true),
            None => (pattern, false),
        };
        map.regexes
            .push((super::regex::compile(pattern, caseless)?, value));
        return Ok(());
    }
    let key = key.strip_prefix('\\').unwrap_or(key).to_ascii_lowercase();
    if hostnames {
        if let Some(suffix) = key.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.contains('*') {
                return Err(format!("invalid hostname or wildcard \"{key}\""));
            }
            map.leading.push((suffix.to_string(), false, value));
            return Ok(());
        }
        if key.starts_with('.') && key.len() > 1 {
            map.leading.push((key, true, value));
            return Ok(());
        }
        if let Some(prefix) = key.strip_suffix('*') {
            if !prefix.ends_with('.') || prefix.contains('*') {
                return Err(format!("invalid hostname or wildcard \"{key}\""));
            }
            map.trailing.push((prefix.to_string(), value));
            return Ok(());
        }
    }
    let key = key.strip_suffix('.').map(str::to_string).unwrap_or(key);
    if map.exact.insert(key, value).is_some() {
        return Err(duplicate());
    }
    Ok(())
}
