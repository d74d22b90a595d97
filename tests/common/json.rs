//! A small strict JSON reader for the tests (no crate needed for one format).

use std::collections::BTreeMap;

/// A JSON value: the whole grammar, strictly, for `/status.json` and the Grafana dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    pub fn parse(text: &str) -> Json {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value();
        parser.space();
        assert_eq!(parser.at, text.len(), "trailing bytes after the JSON value");
        value
    }

    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(map) => map
                .get(key)
                .unwrap_or_else(|| panic!("no \"{key}\" in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            Json::Null => None,
            _ => panic!("not a string: {self:?}"),
        }
    }

    pub fn num(&self) -> f64 {
        match self {
            Json::Number(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }

    /// Every string under `key`, anywhere in the value.
    pub fn strings_under(&self, key: &str, out: &mut Vec<String>) {
        match self {
            Json::Object(map) => {
                for (k, v) in map {
                    if k == key
                        && let Json::String(s) = v
                    {
                        out.push(s.clone());
                    }
                    v.strings_under(key, out);
                }
            }
            Json::Array(items) => items.iter().for_each(|v| v.strings_under(key, out)),
            _ => {}
        }
    }

    pub fn array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            _ => panic!("not an array: {self:?}"),
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.at < self.bytes.len() && b" \t\r\n".contains(&self.bytes[self.at]) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) {
        self.space();
        assert_eq!(
            self.bytes.get(self.at),
            Some(&byte),
            "expected {:?} at {}",
            byte as char,
            self.at
        );
        self.at += 1;
    }

    fn value(&mut self) -> Json {
        self.space();
        let rest = &self.bytes[self.at..];
        for (word, value) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
        ] {
            if rest.starts_with(word.as_bytes()) {
                self.at += word.len();
                return value;
            }
        }
        match rest.first() {
            Some(b'"') => Json::String(self.string()),
            Some(b'[') => {
                self.eat(b'[');
                let mut items = Vec::new();
                self.space();
                if self.bytes[self.at] == b']' {
                    self.at += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    self.space();
                    match self.bytes[self.at] {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Json::Array(items);
                        }
                        other => panic!("unexpected {:?} in an array", other as char),
                    }
                }
            }
            Some(b'{') => {
                self.eat(b'{');
                let mut map = BTreeMap::new();
                self.space();
                if self.bytes[self.at] == b'}' {
                    self.at += 1;
                    return Json::Object(map);
                }
                loop {
                    self.space();
                    let key = self.string();
                    self.eat(b':');
                    let value = self.value();
                    assert!(map.insert(key, value).is_none(), "a duplicate key");
                    self.space();
                    match self.bytes[self.at] {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Json::Object(map);
                        }
                        other => panic!("unexpected {:?} in an object", other as char),
                    }
                }
            }
            _ => {
                let start = self.at;
                while self.at < self.bytes.len()
                    && b"-+.eE0123456789".contains(&self.bytes[self.at])
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.bytes[start..self.at]).unwrap();
                Json::Number(
                    text.parse()
                        .unwrap_or_else(|_| panic!("bad number {text:?}")),
                )
            }
        }
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.bytes[self.at];
            self.at += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.bytes[self.at];
                    self.at += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.bytes[self.at..self.at + 4]);
                            let code = u32::from_str_radix(hex.unwrap(), 16).unwrap();
                            out.push(char::from_u32(code).unwrap());
                            self.at += 4;
                        }
                        other => panic!("bad escape \\{}", other as char),
                    }
                }
                c if c < 0x20 => panic!("a raw control character in a string"),
                _ => {
                    // Copy the whole UTF-8 sequence.
                    let start = self.at - 1;
                    let mut end = self.at;
                    while end < self.bytes.len() && (self.bytes[end] & 0xC0) == 0x80 {
                        end += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.bytes[start..end]).unwrap());
                    self.at = end;
                }
            }
        }
    }
}
