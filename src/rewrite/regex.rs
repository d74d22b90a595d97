//! Regular expressions of `map`, `if` and friends, on the `regex` crate: matching takes time
//! linear in the input whatever the pattern, so a hostile pattern or request cannot stall a
//! worker. PCRE constructs that need backtracking are refused when the file is read, naming
//! the construct, instead of failing as a bare syntax error.

use regex::{Regex, RegexBuilder};

/// PCRE-only syntax, as written, and what it is called.
const PCRE_ONLY: &[(&str, &str)] = &[
    ("(?<=", "look-behind \"(?<=...)\""),
    ("(?<!", "negative look-behind \"(?<!...)\""),
    ("(?=", "look-ahead \"(?=...)\""),
    ("(?!", "negative look-ahead \"(?!...)\""),
    ("(?>", "atomic group \"(?>...)\""),
    ("(?(", "conditional group \"(?(...)...)\""),
    ("(?|", "branch reset group \"(?|...)\""),
    ("(?R)", "recursion \"(?R)\""),
    ("(?&", "subroutine call \"(?&name)\""),
    ("(?P>", "subroutine call \"(?P>name)\""),
    ("(?P=", "named backreference \"(?P=name)\""),
    ("\\k<", "named backreference \"\\k<name>\""),
    ("\\k'", "named backreference \"\\k'name'\""),
    ("\\k{", "named backreference \"\\k{name}\""),
    ("\\g", "backreference \"\\g...\""),
    ("\\K", "match reset \"\\K\""),
    ("\\G", "anchor \"\\G\""),
    ("\\Z", "anchor \"\\Z\" (write \"\\z\" or \"$\")"),
    ("\\Q", "literal span \"\\Q...\\E\""),
    ("*+", "possessive quantifier \"*+\""),
    ("++", "possessive quantifier \"++\""),
    ("?+", "possessive quantifier \"?+\""),
    ("}+", "possessive quantifier \"{n,m}+\""),
];

/// Compiles `pattern` (case-insensitively for nginx's `~*`). The error names a PCRE-only
/// construct if there is one, else says what the `regex` crate did not accept.
pub fn compile(pattern: &str, caseless: bool) -> Result<Regex, String> {
    if let Some(construct) = pcre_only(pattern) {
        return Err(format!(
            "regular expression \"{pattern}\" uses the PCRE-only {construct}, which sluice does \
             not support (its regular expressions run in linear time, without backtracking)"
        ));
    }
    RegexBuilder::new(pattern)
        .case_insensitive(caseless)
        .size_limit(1 << 20)
        .build()
        .map_err(|error| {
            let reason = error.to_string();
            let last = reason.lines().last().unwrap_or_default().trim();
            format!("invalid regular expression \"{pattern}\": {last}")
        })
}

/// The first PCRE-only construct in `pattern`, outside character classes and escapes.
fn pcre_only(pattern: &str) -> Option<String> {
    let bytes = pattern.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &pattern[i..];
        match bytes[i] {
            b'\\' => {
                if let Some(d) = bytes.get(i + 1).filter(|d| (b'1'..=b'9').contains(d))
                    && !in_class
                {
                    return Some(format!("backreference \"\\{}\"", *d as char));
                }
                if !in_class
                    && let Some((_, name)) = PCRE_ONLY
                        .iter()
                        .find(|(text, _)| text.starts_with('\\') && rest.starts_with(text))
                {
                    return Some((*name).to_string());
                }
                i += 2;
                continue;
            }
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            _ if !in_class => {
                if let Some((_, name)) = PCRE_ONLY
                    .iter()
                    .find(|(text, _)| !text.starts_with('\\') && rest.starts_with(text))
                {
                    return Some((*name).to_string());
                }
            }
            _ => {}
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcre_only_constructs_are_named() {
        for (pattern, named) in [
            ("^(?=a)", "look-ahead"),
            ("(?<!x)y", "negative look-behind"),
            ("(a)\\1", "backreference \"\\1\""),
            ("a++", "possessive"),
            ("(?>ab)", "atomic group"),
        ] {
            let error = compile(pattern, false).unwrap_err();
            assert!(error.contains(named), "{pattern}: {error}");
        }
    }

    #[test]
    fn ordinary_patterns_compile() {
        assert!(compile(r"^(www\.)?example\.(org|com)$", false).is_ok());
        assert!(
            compile(r"[*+?]+x", false).is_ok(),
            "inside a class, no quantifier"
        );
        assert!(compile("(?<name>a)(?P<other>b)", false).is_ok());
        assert!(compile("ABC", true).unwrap().is_match("abc"));
        let error = compile("a(b", false).unwrap_err();
        assert!(
            error.starts_with("invalid regular expression \"a(b\""),
            "{error}"
        );
    }
}
