//! Splits an nginx-syntax file into tokens, each carrying its line number.
//!
//! The rules follow nginx's own lexer: words end at whitespace, `;`, `{` or `}`; `#` starts a
//! comment only where a token could start; `"…"` and `'…'` quote a word, with `\"`, `\'`, `\\`,
//! `\t`, `\r` and `\n` unescaped inside (a `)` may follow the closing quote, as in
//! `if ($a = "b")`); `${name}` keeps its braces inside an unquoted word.

use super::error::ConfigError;

/// One lexical unit of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A directive name or argument, quotes removed and escapes resolved.
    Word(String),
    Semicolon,
    OpenBrace,
    CloseBrace,
}

/// A token and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub token: Token,
    pub line: u32,
}

/// Tokenises `text`; errors name `file` and the line.
pub fn tokenize(text: &[u8], file: &str) -> Result<Vec<Located>, ConfigError> {
    Lexer {
        text,
        pos: 0,
        line: 1,
        file,
    }
    .run()
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
    line: u32,
    file: &'a str,
}

impl Lexer<'_> {
    fn run(mut self) -> Result<Vec<Located>, ConfigError> {
        let mut tokens = Vec::new();
        while let Some(byte) = self.peek() {
            let line = self.line;
            let token = match byte {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.bump();
                    continue;
                }
                b'#' => {
                    self.skip_comment();
                    continue;
                }
                b';' => {
                    self.bump();
                    Token::Semicolon
                }
                b'{' => {
                    self.bump();
                    Token::OpenBrace
                }
                b'}' => {
                    self.bump();
                    Token::CloseBrace
                }
                b'"' | b'\'' => Token::Word(self.quoted(byte)?),
                _ => Token::Word(self.unquoted()?),
            };
            tokens.push(Located { token, line });
        }
        Ok(tokens)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        if byte == b'\n' {
            self.line += 1;
        }
        Some(byte)
    }

    fn skip_comment(&mut self) {
        while let Some(byte) = self.bump() {
            if byte == b'\n' {
                break;
            }
        }
    }

    fn error(&self, line: u32, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, line, message)
    }

    fn quoted(&mut self, quote: u8) -> Result<String, ConfigError> {
        let start_line = self.line;
        self.bump();
        let mut word = Vec::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.error(
                        start_line,
                        format!(
                            "unexpected end of file, expecting terminating {}",
                            quote as char
                        ),
                    ));
                }
                Some(b) if b == quote => break,
                Some(b'\\') => match self.bump() {
                    None => continue,
                    Some(escaped) => push_escaped(&mut word, escaped),
                },
                Some(b) => word.push(b),
            }
        }
        // nginx insists on a separator after a closing quote: `"a"b` is an error, not `ab`.
        // A `)` may follow, closing an `if` condition: it becomes a word of its own.
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b'}' | b')') => {}
            Some(other) => {
                return Err(self.error(self.line, format!("unexpected \"{}\"", other as char)));
            }
        }
        self.utf8(word, start_line)
    }

    fn unquoted(&mut self) -> Result<String, ConfigError> {
        let start_line = self.line;
        let mut word = Vec::new();
        while let Some(byte) = self.peek() {
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b'}' => break,
                b'\\' => {
                    self.bump();
                    if let Some(escaped) = self.bump() {
                        push_escaped(&mut word, escaped);
                    }
                }
                b'$' if self.text.get(self.pos + 1) == Some(&b'{') => {
                    // `${name}`: the braces belong to the variable, not to a block.
                    while let Some(b) = self.bump() {
                        word.push(b);
                        if b == b'}' {
                            break;
                        }
                    }
                }
                _ => {
                    word.push(byte);
                    self.bump();
                }
            }
        }
        self.utf8(word, start_line)
    }

    fn utf8(&self, word: Vec<u8>, line: u32) -> Result<String, ConfigError> {
        String::from_utf8(word).map_err(|_| self.error(line, "invalid UTF-8 in a word"))
    }
}

/// Resolves one backslash escape the way nginx does; unknown escapes keep their backslash.
fn push_escaped(word: &mut Vec<u8>, escaped: u8) {
    match escaped {
        b'"' | b'\'' | b'\\' => word.push(escaped),
        b't' => word.push(b'\t'),
        b'r' => word.push(b'\r'),
        b'n' => word.push(b'\n'),
        other => word.extend_from_slice(&[b'\\', other]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Token> {
        tokenize(text.as_bytes(), "t.conf")
            .unwrap()
            .into_iter()
            .map(|l| l.token)
            .collect()
    }

    fn word(s: &str) -> Token {
        Token::Word(s.to_string())
    }

    #[test]
    fn splits_directives_blocks_and_comments() {
        assert_eq!(
            words("server { listen 80; # comment ; {\n}"),
            vec![
                word("server"),
                Token::OpenBrace,
                word("listen"),
                word("80"),
                Token::Semicolon,
                Token::CloseBrace
            ]
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            words(r#"a "b c\r\n\"" 'd\'e' f\;g"#),
            vec![word("a"), word("b c\r\n\""), word("d'e"), word("f\\;g")]
        );
    }

    #[test]
    fn hash_inside_a_word_is_not_a_comment() {
        assert_eq!(words("a#b;"), vec![word("a#b"), Token::Semicolon]);
    }

    #[test]
    fn braced_variables_stay_in_the_word() {
        assert_eq!(
            words("x ${connect_host}:1;"),
            vec![word("x"), word("${connect_host}:1"), Token::Semicolon]
        );
    }

    #[test]
    fn a_quoted_word_may_close_an_if_condition() {
        assert_eq!(
            words("if ($host = \"a b\") {"),
            vec![
                word("if"),
                word("($host"),
                word("="),
                word("a b"),
                word(")"),
                Token::OpenBrace
            ]
        );
    }

    #[test]
    fn lines_are_counted() {
        let tokens = tokenize(b"a;\n\n\"b\nc\" d;", "t.conf").unwrap();
        let lines: Vec<u32> = tokens.iter().map(|t| t.line).collect();
        assert_eq!(lines, vec![1, 1, 3, 4, 4]);
    }

    #[test]
    fn unterminated_quote_names_its_line() {
        let err = tokenize(b"a;\nb \"oops;\n", "t.conf").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected end of file, expecting terminating \" in t.conf:2"
        );
    }

    #[test]
    fn closing_quote_needs_a_separator() {
        let err = tokenize(b"a \"b\"c;", "t.conf").unwrap_err();
        assert_eq!(err.to_string(), "unexpected \"c\" in t.conf:1");
    }
}
