//! nginx's rewrite module as a forward proxy needs it: `map`, `set`, `if`, `return` and
//! `break`, run in nginx's phase order before access checks. The server's directives run
//! first, then the location's (chosen as the forwarder will choose it); a `return` answers at
//! once, for a CONNECT before anything is resolved or dialled.
//!
//! What the rest of nginx's rewrite module does (`rewrite`, `rewrite_log`, `break` outside
//! `if`) and Lua are refused when the file is read: ignoring them would run something else
//! than what the operator wrote.

pub mod condition;
pub mod map;
pub mod regex;

use std::sync::Arc;

use condition::Condition;
use map::Maps;

use crate::access_log::Entry;
use crate::config::directive::{Context, Entry as TableEntry, MANY, Spec};
use crate::config::{ConfigError, Cx, Directive};
use crate::error::ProxyError;
use crate::settings::Server;
use crate::template::Template;
use crate::variables::{self, Declared, SETTABLE, Var};

const HTTP: &[Context] = &[Context::Http];
const SERVER_LOCATION: &[Context] = &[Context::Server, Context::Location];
const SERVER_LOCATION_IF: &[Context] = &[Context::Server, Context::Location, Context::If];

/// `map`, in `http`.
pub const MAP_DIRECTIVES: &[Spec] = &[Spec::block("map", HTTP, (2, 2))];

/// The directives of a server's, a location's or an `if`'s rewrite program.
pub const DIRECTIVES: &[Spec] = &[
    Spec::block("if", SERVER_LOCATION, (1, MANY)),
    Spec::used("set", SERVER_LOCATION_IF, (2, 2), false),
    Spec::used("return", SERVER_LOCATION_IF, (1, 2), false),
    Spec::used("break", SERVER_LOCATION_IF, (0, 0), false),
    Spec::unsupported(
        "rewrite",
        "is not supported: a forward proxy passes each URI on as the client wrote it; \
         answer with \"return\" instead",
    ),
    Spec::unsupported(
        "rewrite_log",
        "is not supported: sluice has no \"rewrite\" to log",
    ),
    Spec::ignored(
        "uninitialized_variable_warn",
        false,
        "an unset variable is empty, without a warning",
    ),
];

/// Why Lua is refused, wherever a `*_by_lua*` directive stands.
const NO_LUA: &str = "is not supported: sluice runs no Lua; \"map\", \"if\", \"set\" and \"return\" cover the usual access checks";

/// An nginx Lua directive, refused; the `_block` forms take a block.
const fn lua(name: &'static str, block: bool) -> Spec {
    Spec {
        block,
        ..Spec::unsupported(name, NO_LUA)
    }
}

macro_rules! lua_phases {
    ($($phase:literal),*) => {
        &[$(
            lua(concat!($phase, "_by_lua"), false),
            lua(concat!($phase, "_by_lua_block"), true),
            lua(concat!($phase, "_by_lua_file"), false),
        )*]
    };
}

/// `*_by_lua`, `*_by_lua_block`, `*_by_lua_file` of lua-nginx-module and its stream twin.
pub const LUA_DIRECTIVES: &[Spec] = lua_phases!(
    "init",
    "init_worker",
    "exit_worker",
    "set",
    "server_rewrite",
    "rewrite",
    "access",
    "content",
    "header_filter",
    "body_filter",
    "log",
    "balancer",
    "preread",
    "ssl_certificate",
    "ssl_client_hello",
    "ssl_session_fetch",
    "ssl_session_store"
);

/// One step of a rewrite program.
#[derive(Debug, Clone)]
pub enum Op {
    /// `set $name value;`
    Set { name: String, value: Template<Var> },
    /// `return ...;`
    Return(Return),
    /// `break;` (inside `if`): the rest of this level's program is skipped.
    Break,
    /// `if (condition) { ... }`
    If { condition: Condition, body: Vec<Op> },
}

/// `return CODE [TEXT]`, `return CODE URL`, `return URL`.
#[derive(Debug, Clone)]
pub struct Return {
    pub status: u16,
    /// The body, or for a redirection the `Location`.
    pub text: Option<Template<Var>>,
}

/// The rewrite program of one level (server or location), and for a server the file's maps.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub ops: Vec<Op>,
    pub maps: Arc<Maps>,
}

impl Rewrite {
    /// Applies one of [`DIRECTIVES`] or [`MAP_DIRECTIVES`].
    pub fn set(&mut self, cx: &mut Cx, directive: &Directive) -> Result<(), ConfigError> {
        if directive.name == "map" {
            return map::define(cx, directive, Arc::make_mut(&mut self.maps));
        }
        if directive.name == "break" {
            return Err(cx.error(
                directive,
                "\"break\" outside \"if\" is not supported: sluice has no \"rewrite\" for it to stop",
            ));
        }
        let op = op(cx, directive)?;
        self.ops.push(op);
        Ok(())
    }
}

/// The program of an `if` block, checked as nginx's `if` context.
const IF_LEVEL: &[TableEntry<Vec<Op>>] = &[TableEntry {
    specs: DIRECTIVES,
    set: |cx, d, ops| {
        ops.push(op(cx, d)?);
        Ok(())
    },
}];

fn op(cx: &mut Cx, directive: &Directive) -> Result<Op, ConfigError> {
    let declared = std::mem::take(cx.state::<Declared>());
    let result = parse_op(cx, directive, &declared);
    *cx.state::<Declared>() = declared;
    result
}

fn parse_op(cx: &mut Cx, directive: &Directive, declared: &Declared) -> Result<Op, ConfigError> {
    let args = &directive.args;
    let template =
        |text: &str| variables::parse(text, declared).map_err(|e| cx.error(directive, e));
    Ok(match directive.name.as_str() {
        "set" => {
            let name = args[0].strip_prefix('$').unwrap_or_default();
            let builtin = Var::lookup(name).filter(|_| !SETTABLE.contains(&name));
            if name.is_empty() || builtin.is_some() {
                return Err(cx.error(
                    directive,
                    format!("invalid variable name \"{}\" (\"set\" needs a variable of its own, not a built-in one)", args[0]),
                ));
            }
            Op::Set {
                name: name.to_string(),
                value: template(&args[1])?,
            }
        }
        "return" => Op::Return(parse_return(cx, directive, declared)?),
        "break" => Op::Break,
        "if" => {
            let condition = Condition::parse(args, declared).map_err(|e| cx.error(directive, e))?;
            let block = directive.block.as_deref().unwrap_or_default();
            let mut body = Vec::new();
            for inner in cx.check_nested(block, Context::If)? {
                cx.dispatch(inner, Context::If, IF_LEVEL, &mut body)?;
            }
            Op::If { condition, body }
        }
        _ => return Err(cx.not_allowed(directive)),
    })
}

fn parse_return(
    cx: &Cx,
    directive: &Directive,
    declared: &Declared,
) -> Result<Return, ConfigError> {
    let args = &directive.args;
    let template =
        |text: &str| variables::parse(text, declared).map_err(|e| cx.error(directive, e));
    let is_url = |text: &str| {
        ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| text.starts_with(p))
    };
    if args.len() == 1 && is_url(&args[0]) {
        return Ok(Return {
            status: 302,
            text: Some(template(&args[0])?),
        });
    }
    let status = args[0]
        .parse::<u16>()
        .ok()
        .filter(|&s| s <= 999 && args[0].bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| cx.error(directive, format!("invalid return code \"{}\"", args[0])))?;
    let text = args.get(1).map(|t| template(t)).transpose()?;
    Ok(Return { status, text })
}

/// Adds to `declared` every variable that a `set` or a `map` anywhere in `tree` names, so
/// that a template may use it wherever it stands (nginx declares variables for the whole
/// configuration).
pub fn declare(tree: &[Directive], declared: &mut Declared) {
    for directive in tree {
        match directive.name.as_str() {
            "set" if directive.args.len() == 2 => {
                if let Some(name) = directive.args[0].strip_prefix('$') {
                    declared.0.insert(name.to_string());
                }
            }
            "map" if directive.args.len() == 2 => {
                if let Some(name) = directive.args[1].strip_prefix('$') {
                    declared.0.insert(name.to_string());
                }
                continue;
            }
            _ => {}
        }
        if let Some(block) = &directive.block {
            declare(block, declared);
        }
    }
}

/// What a level's program ended with.
enum Flow {
    Next,
    Break,
    Return(ProxyError),
}

/// The rewrite phases of one request: the server's program, then the program of the location
/// the request will be forwarded by (a CONNECT has none). An `Err` is the `return` answer.
pub fn run(server: &Server, entry: &mut Entry) -> Result<(), ProxyError> {
    entry.vars.maps = Some(Arc::clone(&server.rewrite.maps));
    if let Flow::Return(answer) = exec(&server.rewrite.ops, entry) {
        return Err(answer);
    }
    let Some(head) = entry.head.as_deref() else {
        return Ok(());
    };
    if head.method == "CONNECT" {
        return Ok(());
    }
    let path = variables::path(head);
    let Some(index) = server
        .location_for(path)
        .and_then(|l| server.locations.iter().position(|x| std::ptr::eq(x, l)))
    else {
        return Ok(());
    };
    let ops = &server.locations[index].rewrite.ops;
    if ops.is_empty() {
        return Ok(());
    }
    // Its answer is logged where the location logs.
    entry.location = Some(index);
    match exec(ops, entry) {
        Flow::Return(answer) => Err(answer),
        _ => Ok(()),
    }
}

fn exec(ops: &[Op], entry: &mut Entry) -> Flow {
    for op in ops {
        match op {
            Op::Set { name, value } => {
                let value = variables::render(value, entry);
                entry.vars.set(name, value);
            }
            Op::Return(answer) => {
                let text = answer.text.as_ref().map(|t| variables::render(t, entry));
                return Flow::Return(ProxyError::Returned {
                    status: answer.status,
                    text,
                });
            }
            Op::Break => return Flow::Break,
            Op::If { condition, body } => {
                if condition.holds(entry) {
                    match exec(body, entry) {
                        Flow::Next => {}
                        flow => return flow,
                    }
                }
            }
        }
    }
    Flow::Next
}
