//! Turns tokens into a tree of directives: `name arg ...;` or `name arg ... { ... }`.
//!
//! This layer knows only the shape of the language (missing `;`, unbalanced braces); what each
//! directive means is decided by the module that declares it (see [`super::directive`]).

use super::error::ConfigError;
use super::lexer::{Located, Token};

/// One directive as written, with its block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub line: u32,
    pub block: Option<Vec<Directive>>,
}

/// Blocks nested deeper than this are refused: real configs nest three deep, and the parser
/// recurses once per level.
const MAX_DEPTH: usize = 32;

/// Parses a whole file's tokens into its top-level directives.
pub fn parse(tokens: &[Located], file: &str) -> Result<Vec<Directive>, ConfigError> {
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        file,
    };
    let directives = parser.block_body(None)?;
    Ok(directives)
}

struct Parser<'a> {
    tokens: &'a [Located],
    pos: usize,
    depth: usize,
    file: &'a str,
}

impl Parser<'_> {
    /// Reads directives until the `}` that closes the block opened on `opened_at`, or until the
    /// end of the file at top level.
    fn block_body(&mut self, opened_at: Option<u32>) -> Result<Vec<Directive>, ConfigError> {
        let mut directives = Vec::new();
        loop {
            let Some(next) = self.tokens.get(self.pos) else {
                return match opened_at {
                    None => Ok(directives),
                    Some(_) => Err(self.at_end("unexpected end of file, expecting \"}\"")),
                };
            };
            self.pos += 1;
            match &next.token {
                Token::CloseBrace if opened_at.is_some() => return Ok(directives),
                Token::Word(name) => directives.push(self.directive(name.clone(), next.line)?),
                other => return Err(self.unexpected(other, next.line)),
            }
        }
    }

    fn directive(&mut self, name: String, line: u32) -> Result<Directive, ConfigError> {
        let mut args = Vec::new();
        loop {
            let Some(next) = self.tokens.get(self.pos) else {
                return Err(self.at_end("unexpected end of file, expecting \";\" or \"}\""));
            };
            self.pos += 1;
            match &next.token {
                Token::Word(arg) => args.push(arg.clone()),
                Token::Semicolon => {
                    return Ok(Directive {
                        name,
                        args,
                        line,
                        block: None,
                    });
                }
                Token::OpenBrace => {
                    if self.depth == MAX_DEPTH {
                        return Err(ConfigError::at(
                            self.file,
                            next.line,
                            "blocks are nested too deeply",
                        ));
                    }
                    self.depth += 1;
                    let block = self.block_body(Some(next.line))?;
                    self.depth -= 1;
                    return Ok(Directive {
                        name,
                        args,
                        line,
                        block: Some(block),
                    });
                }
                Token::CloseBrace => return Err(self.unexpected(&next.token, next.line)),
            }
        }
    }

    fn unexpected(&self, token: &Token, line: u32) -> ConfigError {
        let shown = match token {
            Token::Semicolon => ";",
            Token::OpenBrace => "{",
            Token::CloseBrace => "}",
            Token::Word(w) => w.as_str(),
        };
        ConfigError::at(self.file, line, format!("unexpected \"{shown}\""))
    }

    fn at_end(&self, message: &str) -> ConfigError {
        let last_line = self.tokens.last().map_or(1, |t| t.line);
        ConfigError::at(self.file, last_line, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::tokenize;

    fn parse_str(text: &str) -> Result<Vec<Directive>, String> {
        let tokens = tokenize(text.as_bytes(), "t.conf").map_err(|e| e.to_string())?;
        parse(&tokens, "t.conf").map_err(|e| e.to_string())
    }

    #[test]
    fn nested_blocks() {
        let tree = parse_str("server {\n listen 80;\n location / { proxy_pass x; }\n}\n").unwrap();
        assert_eq!(tree.len(), 1);
        let server = &tree[0];
        assert_eq!(server.name, "server");
        let body = server.block.as_ref().unwrap();
        assert_eq!(body[0].name, "listen");
        assert_eq!(body[0].args, vec!["80"]);
        assert_eq!(body[0].line, 2);
        assert_eq!(body[1].args, vec!["/"]);
        assert_eq!(body[1].block.as_ref().unwrap()[0].name, "proxy_pass");
    }

    #[test]
    fn structural_errors_name_the_line() {
        assert_eq!(
            parse_str("server {\n listen 80;\n").unwrap_err(),
            "unexpected end of file, expecting \"}\" in t.conf:2"
        );
        assert_eq!(
            parse_str("listen 80").unwrap_err(),
            "unexpected end of file, expecting \";\" or \"}\" in t.conf:1"
        );
        assert_eq!(
            parse_str("server {\n listen 80\n}\n").unwrap_err(),
            "unexpected \"}\" in t.conf:3"
        );
        assert_eq!(
            parse_str("a;\n}\n").unwrap_err(),
            "unexpected \"}\" in t.conf:2"
        );
        assert_eq!(parse_str(";").unwrap_err(), "unexpected \";\" in t.conf:1");
        assert_eq!(parse_str("{}").unwrap_err(), "unexpected \"{\" in t.conf:1");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = "a {".repeat(100_000);
        assert_eq!(
            parse_str(&text).unwrap_err(),
            "blocks are nested too deeply in t.conf:1"
        );
    }
}
