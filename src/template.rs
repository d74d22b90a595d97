//! Strings with nginx-style `$name` / `${name}` variables, parsed once at config time.
//!
//! Each directive that takes a template decides which variables exist (`V`), so an unknown
//! variable is a config error, never a surprise at request time.

/// A parsed template: literal text interleaved with variables of type `V`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template<V> {
    parts: Vec<Part<V>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part<V> {
    Text(String),
    Var(V),
}

impl<V> Template<V> {
    /// Parses `text`; `lookup` maps a variable name to `V`, or `None` if it does not exist.
    /// The error is worded as nginx words it (`unknown "foo" variable`).
    pub fn parse(text: &str, mut lookup: impl FnMut(&str) -> Option<V>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| "the closing bracket in variable name is missing".to_string())?;
                (&braced[..end], end + 2)
            } else {
                let len = after
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                (&after[..len], len)
            };
            if name.is_empty() {
                return Err("invalid variable name".to_string());
            }
            let var = lookup(name).ok_or_else(|| format!("unknown \"{name}\" variable"))?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
            rest = &after[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template is plain text without variables.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Appends the expansion to `out`; `expand` appends one variable's value.
    pub fn render_into(&self, out: &mut String, mut expand: impl FnMut(&V, &mut String)) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => expand(var, out),
            }
        }
    }

    /// [`Template::render_into`] for byte output, where values need not be UTF-8.
    pub fn render_bytes(&self, out: &mut Vec<u8>, mut expand: impl FnMut(&V, &mut Vec<u8>)) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Var(var) => expand(var, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Var {
        Host,
        Port,
    }

    fn lookup(name: &str) -> Option<Var> {
        match name {
            "host" => Some(Var::Host),
            "port" => Some(Var::Port),
            _ => None,
        }
    }

    fn render(template: &Template<Var>) -> String {
        let mut out = String::new();
        template.render_into(&mut out, |v, out| {
            out.push_str(match v {
                Var::Host => "example.org",
                Var::Port => "443",
            })
        });
        out
    }

    #[test]
    fn expands_plain_and_braced_variables() {
        let t = Template::parse("to $host:${port}x $$host", lookup).unwrap_err();
        assert_eq!(t, "invalid variable name");
        let t = Template::parse("to $host:${port}x.", lookup).unwrap();
        assert_eq!(render(&t), "to example.org:443x.");
        let t = Template::parse("no variables", lookup).unwrap();
        assert_eq!(render(&t), "no variables");
    }

    #[test]
    fn unknown_variables_are_named() {
        assert_eq!(
            Template::parse("a $nope b", lookup).unwrap_err(),
            "unknown \"nope\" variable"
        );
        assert_eq!(
            Template::parse("${host", lookup).unwrap_err(),
            "the closing bracket in variable name is missing"
        );
    }
}
