//! What a directive may look like, declared by the module that owns it, and the walker that
//! holds every directive of a block to its declaration before handing it to that module.
//!
//! A module lists its directives as [`Spec`]s (nginx's `ngx_command_t`): the blocks they may
//! stand in, their argument count, whether they may repeat. The walker checks a block against
//! every module's specs ([`Cx::check`]) and then gives each directive to the [`Entry`] that
//! declares it ([`Cx::dispatch`]), which sets the module's part of that level's settings.

use std::collections::HashSet;

use super::cx::Cx;
use super::error::ConfigError;
use super::syntax::Directive;

/// The kind of block a directive stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The top level of the file.
    Main,
    Http,
    Server,
    Location,
    /// `users NAME... { }` in a server: rules for requests authenticated as those users.
    Users,
    /// Inside `if (...) { }`, in a server or a location.
    If,
}

pub const MAIN: &[Context] = &[Context::Main];
pub const MAIN_HTTP: &[Context] = &[Context::Main, Context::Http];
pub const HTTP_SERVER: &[Context] = &[Context::Http, Context::Server];
pub const SERVER: &[Context] = &[Context::Server];
pub const LOCATION: &[Context] = &[Context::Location];
pub const HTTP_SERVER_USERS: &[Context] = &[Context::Http, Context::Server, Context::Users];
pub const HTTP_SERVER_LOCATION: &[Context] = &[Context::Http, Context::Server, Context::Location];
pub const ANYWHERE: &[Context] = &[
    Context::Main,
    Context::Http,
    Context::Server,
    Context::Location,
];

/// Any number of arguments.
pub const MANY: usize = usize::MAX;

/// What sluice does with a directive it knows.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// It sets something; the module that declares it handles it.
    Used,
    /// Accepted with a warning giving this reason.
    Ignored(&'static str),
    /// Refused with this reason.
    Unsupported(&'static str),
}

/// One directive's declaration.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub contexts: &'static [Context],
    /// Whether it takes a `{ }` block.
    pub block: bool,
    /// Allowed argument counts, inclusive.
    pub args: (usize, usize),
    /// May appear at most once per block.
    pub unique: bool,
    pub role: Role,
    /// Read before every other directive, so that others may refer to it wherever it stands
    /// (`log_format`, named by `access_log`).
    pub first: bool,
    /// A context where it passes the checks but is then refused with this reason, when a
    /// plain "not allowed here" would not tell the operator what to do.
    pub refused: Option<(Context, &'static str)>,
}

impl Spec {
    /// A directive that sets something.
    pub const fn used(
        name: &'static str,
        contexts: &'static [Context],
        args: (usize, usize),
        unique: bool,
    ) -> Spec {
        Spec {
            name,
            contexts,
            block: false,
            args,
            unique,
            role: Role::Used,
            first: false,
            refused: None,
        }
    }

    /// A block directive (`http`, `server`, `location`).
    pub const fn block(
        name: &'static str,
        contexts: &'static [Context],
        args: (usize, usize),
    ) -> Spec {
        Spec {
            block: true,
            ..Spec::used(name, contexts, args, false)
        }
    }

    /// An nginx directive accepted with a warning, with any arguments; a block one only at
    /// the top level (`events`).
    pub const fn ignored(name: &'static str, block: bool, why: &'static str) -> Spec {
        Spec {
            block,
            role: Role::Ignored(why),
            ..Spec::used(name, if block { MAIN } else { ANYWHERE }, (0, MANY), false)
        }
    }

    /// An nginx directive refused with this reason, wherever it stands.
    pub const fn unsupported(name: &'static str, why: &'static str) -> Spec {
        Spec {
            role: Role::Unsupported(why),
            ..Spec::used(name, ANYWHERE, (0, MANY), false)
        }
    }

    /// See [`Spec::first`].
    pub const fn read_first(self) -> Spec {
        Spec {
            first: true,
            ..self
        }
    }

    /// See [`Spec::refused`].
    pub const fn refused_in(self, context: Context, why: &'static str) -> Spec {
        Spec {
            refused: Some((context, why)),
            ..self
        }
    }
}

/// Sets the part of a level's settings `L` that a module owns, from one of its directives.
pub type Handler<L> = fn(&mut Cx, &Directive, &mut L) -> Result<(), ConfigError>;

/// One module's directives at one level: which they are, and the handler that applies them to
/// that level's settings `L` (usually by passing the module's own field of `L` on).
pub struct Entry<L: 'static> {
    pub specs: &'static [Spec],
    pub set: Handler<L>,
}

impl Cx<'_> {
    /// The declaration of `name`, from any module.
    pub fn spec(&self, name: &str) -> Option<&'static Spec> {
        self.registry
            .iter()
            .flat_map(|specs| specs.iter())
            .find(|s| s.name == name)
    }

    /// Checks every directive of a block written in `context` against its declaration, and
    /// returns the ones some module must act on. Ignored ones become warnings; the rest fail
    /// with nginx's wording. A block is checked whole before any of it takes effect.
    ///
    /// This also starts the block's level (see [`Cx::first_in_level`]): a level's directives
    /// are applied right after its block is checked, and before any block inside it.
    pub fn check<'t>(
        &mut self,
        block: &'t [Directive],
        context: Context,
    ) -> Result<Vec<&'t Directive>, ConfigError> {
        self.start_level();
        self.check_nested(block, context)
    }

    /// [`Cx::check`] for a block that belongs to the level around it (`if`), whose marks
    /// it keeps.
    pub fn check_nested<'t>(
        &mut self,
        block: &'t [Directive],
        context: Context,
    ) -> Result<Vec<&'t Directive>, ConfigError> {
        let mut used = Vec::new();
        let mut seen = HashSet::new();
        for directive in block {
            let name = directive.name.as_str();
            let Some(spec) = self.spec(name) else {
                return Err(self.error(directive, format!("unknown directive \"{name}\"")));
            };
            if !spec.contexts.contains(&context) {
                return Err(self.error(
                    directive,
                    format!("\"{name}\" directive is not allowed here"),
                ));
            }
            match (spec.block, directive.block.is_some()) {
                (true, false) => {
                    return Err(self.error(
                        directive,
                        format!("directive \"{name}\" has no opening \"{{\""),
                    ));
                }
                (false, true) => {
                    return Err(self.error(
                        directive,
                        format!("directive \"{name}\" is not terminated by \";\""),
                    ));
                }
                _ => {}
            }
            let count = directive.args.len();
            if count < spec.args.0 || count > spec.args.1 {
                return Err(self.error(
                    directive,
                    format!("invalid number of arguments in \"{name}\" directive"),
                ));
            }
            if spec.unique && !seen.insert(name) {
                return Err(self.error(directive, format!("\"{name}\" directive is duplicate")));
            }
            match spec.role {
                Role::Used => used.push(directive),
                Role::Ignored(why) => self.warn(
                    directive,
                    format!("\"{name}\" directive is ignored ({why})"),
                ),
                Role::Unsupported(why) => {
                    return Err(self.error(directive, format!("\"{name}\" directive {why}")));
                }
            }
        }
        Ok(used)
    }

    /// Whether one of `table`'s entries declares `directive`.
    pub fn declares<L>(table: &[Entry<L>], directive: &Directive) -> bool {
        table
            .iter()
            .any(|entry| entry.specs.iter().any(|s| s.name == directive.name))
    }

    /// Hands a checked directive of `context` to the entry of `table` that declares it.
    /// Directives read first ([`Spec::first`]) were handled by [`Cx::dispatch_first`].
    pub fn dispatch<L>(
        &mut self,
        directive: &Directive,
        context: Context,
        table: &[Entry<L>],
        settings: &mut L,
    ) -> Result<(), ConfigError> {
        let spec = self.spec(&directive.name);
        if spec.is_some_and(|s| s.first) {
            return Ok(());
        }
        if let Some((_, why)) = spec
            .and_then(|s| s.refused)
            .filter(|(refused, _)| *refused == context)
        {
            return Err(self.error(directive, format!("\"{}\" {why}", directive.name)));
        }
        let entry = table
            .iter()
            .find(|entry| entry.specs.iter().any(|s| s.name == directive.name));
        match entry {
            Some(entry) => (entry.set)(self, directive, settings),
            // Declared for this context, but no entry of this level takes it: a gap in the
            // tables, reported as an error rather than a panic.
            None => Err(self.not_allowed(directive)),
        }
    }

    /// Applies the directives read first ([`Spec::first`]) among `directives`, before the
    /// walk checks their blocks. Malformed ones are left to the walk, which reports them with
    /// the other directives of their block.
    pub fn dispatch_first<'t, L>(
        &mut self,
        directives: impl IntoIterator<Item = &'t Directive>,
        table: &[Entry<L>],
        settings: &mut L,
    ) -> Result<(), ConfigError> {
        for directive in directives {
            let Some(spec) = self.spec(&directive.name).filter(|s| s.first) else {
                continue;
            };
            let count = directive.args.len();
            if directive.block.is_some() || count < spec.args.0 || count > spec.args.1 {
                continue;
            }
            if let Some(entry) = table
                .iter()
                .find(|e| e.specs.iter().any(|s| s.name == spec.name))
            {
                (entry.set)(self, directive, settings)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const SPECS: &[Spec] = &[
        Spec::used("note", HTTP_SERVER_LOCATION, (1, 1), false)
            .refused_in(Context::Location, "in a location is not supported"),
        Spec::used("once", HTTP_SERVER, (1, 1), true),
        Spec::ignored("root", false, "no files"),
    ];
    const REGISTRY: &[&[Spec]] = &[SPECS];
    const TABLE: &[Entry<Vec<String>>] = &[Entry {
        specs: SPECS,
        set: |_, directive, seen| {
            seen.push(directive.args[0].clone());
            Ok(())
        },
    }];

    fn walk(text: &str, context: Context) -> Result<(Vec<String>, Vec<String>), String> {
        let tree = parse(text.as_bytes(), "t.conf").map_err(|e| e.to_string())?;
        let mut cx = Cx::new("t.conf", REGISTRY);
        let mut seen = Vec::new();
        for directive in cx.check(&tree, context).map_err(|e| e.to_string())? {
            cx.dispatch(directive, context, TABLE, &mut seen)
                .map_err(|e| e.to_string())?;
        }
        Ok((seen, cx.warnings))
    }

    #[test]
    fn checked_then_handed_to_the_declaring_entry() {
        let (seen, warnings) =
            walk("note a;\nroot /x;\nonce b;\nnote c;", Context::Server).unwrap();
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(
            warnings,
            ["\"root\" directive is ignored (no files) in t.conf:2"]
        );
    }

    #[test]
    fn a_block_is_checked_whole_before_any_of_it_applies() {
        let error = walk("note a;\nonce b;\nonce c;", Context::Server).unwrap_err();
        assert_eq!(error, "\"once\" directive is duplicate in t.conf:3");
        let error = walk("note a;\nnope;", Context::Server).unwrap_err();
        assert_eq!(error, "unknown directive \"nope\" in t.conf:2");
        let error = walk("once b;", Context::Location).unwrap_err();
        assert_eq!(error, "\"once\" directive is not allowed here in t.conf:1");
    }

    #[test]
    fn refused_in_a_context_with_its_reason() {
        let error = walk("note a;", Context::Location).unwrap_err();
        assert_eq!(error, "\"note\" in a location is not supported in t.conf:1");
    }
}
