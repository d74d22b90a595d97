//! htpasswd files: `user:hash` lines, and checking a password against each hash format nginx
//! accepts on Linux — bcrypt (`$2a$`, `$2b$`, `$2y$`), SHA-crypt (`$5$`, `$6$`), MD5-crypt
//! (`$1$`, `$apr1$`), `{SHA}`, `{SSHA}` and `{PLAIN}`.
//!
//! A line sluice cannot use (an unknown or malformed hash, DES crypt(3), no colon) is a warning
//! naming `file:line`, and its user cannot log in; the rest of the file still works, as in
//! nginx. Every hash comes from a crate (MD5-crypt excepted, see `md5_crypt`) and every
//! comparison is constant-time.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha_crypt::{PasswordVerifier, ShaCrypt};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::md5_crypt::md5_crypt;
use crate::config::ConfigError;

/// A stored password hash.
#[derive(Clone)]
pub enum PasswordHash {
    Bcrypt {
        hash: String,
        cost: u32,
    },
    ShaCrypt {
        hash: String,
        rounds: u32,
    },
    Md5Crypt {
        magic: &'static str,
        salt: String,
        full: String,
    },
    Sha1(Vec<u8>),
    Ssha {
        digest: Vec<u8>,
        salt: Vec<u8>,
    },
    Plain(String),
}

impl PasswordHash {
    pub fn parse(text: &str) -> Result<PasswordHash, &'static str> {
        if text.starts_with("$2y$") || text.starts_with("$2a$") || text.starts_with("$2b$") {
            let parts = text
                .parse::<bcrypt::HashParts>()
                .map_err(|_| "malformed bcrypt hash")?;
            return Ok(PasswordHash::Bcrypt {
                hash: text.to_string(),
                cost: parts.get_cost(),
            });
        }
        if text.starts_with("$5$") || text.starts_with("$6$") {
            return parse_sha_crypt(text).ok_or("malformed SHA-crypt ($5$/$6$) hash");
        }
        for magic in ["$1$", "$apr1$"] {
            if let Some(rest) = text.strip_prefix(magic) {
                let (salt, _) = rest.split_once('$').ok_or("malformed MD5-crypt hash")?;
                return Ok(PasswordHash::Md5Crypt {
                    magic,
                    salt: salt.to_string(),
                    full: text.to_string(),
                });
            }
        }
        if let Some(encoded) = text.strip_prefix("{SHA}") {
            let digest = BASE64.decode(encoded).map_err(|_| "malformed {SHA} hash")?;
            return if digest.len() == 20 {
                Ok(PasswordHash::Sha1(digest))
            } else {
                Err("malformed {SHA} hash")
            };
        }
        if let Some(encoded) = text.strip_prefix("{SSHA}") {
            let mut decoded = BASE64
                .decode(encoded)
                .map_err(|_| "malformed {SSHA} hash")?;
            if decoded.len() <= 20 {
                return Err("malformed {SSHA} hash");
            }
            let salt = decoded.split_off(20);
            return Ok(PasswordHash::Ssha {
                digest: decoded,
                salt,
            });
        }
        if let Some(plain) = text.strip_prefix("{PLAIN}") {
            return Ok(PasswordHash::Plain(plain.to_string()));
        }
        if text.len() == 13
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"./".contains(&b))
        {
            return Err("DES crypt(3) hash not supported (re-hash it with htpasswd -B)");
        }
        Err("unknown password hash format (use bcrypt: htpasswd -B)")
    }

    /// Whether checking this hash takes real CPU time (and so belongs off the event loop).
    pub fn is_slow(&self) -> bool {
        matches!(
            self,
            PasswordHash::Bcrypt { .. }
                | PasswordHash::ShaCrypt { .. }
                | PasswordHash::Md5Crypt { .. }
        )
    }

    /// A rough measure of the work one check costs, to pick the hash an unknown user is
    /// checked against (the costliest, so "no such user" is never the quick answer).
    fn work(&self) -> u64 {
        match self {
            PasswordHash::Bcrypt { cost, .. } => 100u64 << (*cost).min(40),
            PasswordHash::ShaCrypt { rounds, .. } => u64::from(*rounds),
            PasswordHash::Md5Crypt { .. } => 1000,
            _ => 1,
        }
    }

    /// Slow for bcrypt and SHA-crypt by design: call it off the event loop.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHash::Bcrypt { hash, .. } => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::ShaCrypt { hash, .. } => ShaCrypt::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok(),
            PasswordHash::Md5Crypt { magic, salt, full } => {
                let computed = md5_crypt(password.as_bytes(), magic, salt);
                equal(computed.as_bytes(), full.as_bytes())
            }
            PasswordHash::Sha1(digest) => equal(&Sha1::digest(password.as_bytes()), digest),
            PasswordHash::Ssha { digest, salt } => {
                let mut hasher = Sha1::new();
                hasher.update(password.as_bytes());
                hasher.update(salt);
                equal(&hasher.finalize(), digest)
            }
            PasswordHash::Plain(plain) => equal(password.as_bytes(), plain.as_bytes()),
        }
    }
}

/// `$5$[rounds=N$]salt$hash` / `$6$…`, checked by the crate's own parser. glibc clamps the
/// rounds to 1000..=999999999; the crate refuses them instead, so such a line is malformed.
fn parse_sha_crypt(text: &str) -> Option<PasswordHash> {
    let parsed = sha_crypt::PasswordHashRef::new(text).ok()?;
    let mut fields = parsed.fields();
    let first = fields.next()?;
    let rounds = match first.as_str().strip_prefix("rounds=") {
        Some(number) => {
            let rounds = number.parse::<u32>().ok()?;
            sha_crypt::Params::new(rounds).ok()?;
            fields.next()?;
            rounds
        }
        None => sha_crypt::Params::RECOMMENDED_ROUNDS,
    };
    let hash_field = fields.next()?;
    if fields.next().is_some() || hash_field.as_str().is_empty() {
        return None;
    }
    Some(PasswordHash::ShaCrypt {
        hash: text.to_string(),
        rounds,
    })
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Users and their hashes, from an htpasswd file.
#[derive(Clone, Default)]
pub struct Users {
    /// `None`: the user's line could not be used, so that user cannot log in.
    hashes: HashMap<String, Option<PasswordHash>>,
    /// The costliest hash in the file: what an unknown user's password is checked against.
    decoy: Option<PasswordHash>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} entries)", self.hashes.len())
    }
}

/// What looking a user up gives: their hash, or the decoy to spend the same work on.
pub enum Lookup<'a> {
    Known(&'a PasswordHash),
    /// No such user (or their line was unusable): check against this and refuse anyway.
    Unknown(Option<&'a PasswordHash>),
}

impl Users {
    /// Reads an htpasswd file. Lines sluice cannot use come back as warnings naming
    /// `file:line`; only an unreadable file is an error.
    pub fn load(path: &Path) -> Result<(Users, Vec<String>), ConfigError> {
        let shown = path.display().to_string();
        let text = crate::config::read_config_file(path)
            .and_then(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })
            .map_err(|e| {
                ConfigError::whole_file(format!("cannot read the user file \"{shown}\": {e}"))
            })?;
        Ok(Users::parse(&text, &shown))
    }

    /// The users of `text`, and a warning ending in `in {file}:{line}` for each unusable line.
    pub fn parse(text: &str, file: &str) -> (Users, Vec<String>) {
        let mut users = Users::default();
        let mut warnings = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let mut warn = |why: &str| warnings.push(format!("{why} in {file}:{line_no}"));
            let mut fields = line.splitn(3, ':');
            let (Some(user), Some(hash)) = (fields.next(), fields.next()) else {
                warn("expected \"user:hash\", line ignored");
                continue;
            };
            if user.is_empty() {
                warn("empty user name, line ignored");
                continue;
            }
            if users.hashes.contains_key(user) {
                // nginx reads the file top down and stops at the first line for the user.
                warn(&format!(
                    "duplicate user \"{user}\", only its first line is used"
                ));
                continue;
            }
            let hash = match PasswordHash::parse(hash) {
                Ok(hash) => Some(hash),
                Err(why) => {
                    warn(&format!("user \"{user}\" cannot log in: {why}"));
                    None
                }
            };
            users.hashes.insert(user.to_string(), hash);
        }
        users.decoy = users
            .hashes
            .values()
            .flatten()
            .max_by_key(|hash| hash.work())
            .cloned();
        (users, warnings)
    }

    pub fn lookup(&self, user: &str) -> Lookup<'_> {
        match self.hashes.get(user) {
            Some(Some(hash)) => Lookup::Known(hash),
            _ => Lookup::Unknown(self.decoy.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "secret" hashed by other tools: Python's bcrypt, `openssl passwd -5/-6/-1/-apr1`,
    /// `openssl dgst -sha1`, and Python's hashlib for {SSHA} (salt "pepper12").
    const FILE: &str = "\
# users
bob:$2y$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
ann:$2b$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
ada:$2a$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
fay:$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA
fio:$5$rounds=1000$abc$Mz4DiYKTnNKbZLo/mIp3d8Y4aQBhv3uhSwxLDy55/Y8
six:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1
sis:$6$rounds=12000$x$w4oNv2MwswYOX/146kw00kwzC97j2dA6gfQJohoaFzJolbNzv9S9F6UgGSPYx2aBqFDWvLpzpYYq/8c8Sqq6w0
one:$1$saltsalt$9xy1btjgzLYfb7hivXtC//
amy:$apr1$MsHVxMyB$6JwV36VuoPpYZGjFzjFSm1
sam:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
sue:{SSHA}ixl/qVz8jXI9KzaHTHoYHpe2/jhwZXBwZXIxMg==
pat:{PLAIN}secret
";
    const USERS: &[&str] = &[
        "bob", "ann", "ada", "fay", "fio", "six", "sis", "one", "amy", "sam", "sue", "pat",
    ];

    #[test]
    fn every_format_verifies_the_right_password_only() {
        let (users, warnings) = Users::parse(FILE, "users");
        assert_eq!(warnings, Vec::<String>::new());
        for user in USERS {
            let Lookup::Known(hash) = users.lookup(user) else {
                panic!("{user} is unknown");
            };
            assert!(hash.verify("secret"), "{user}");
            assert!(!hash.verify("wrong"), "{user}");
            assert!(!hash.verify(""), "{user}");
        }
    }

    #[test]
    fn a_bcrypt_hash_made_by_the_crate_verifies() {
        let hash = bcrypt::hash("p4ss", 4).unwrap();
        let (users, _) = Users::parse(&format!("u:{hash}\n"), "users");
        let Lookup::Known(hash) = users.lookup("u") else {
            panic!("u is unknown");
        };
        assert!(hash.verify("p4ss") && !hash.verify("p4sS"));
    }

    #[test]
    fn an_unknown_user_is_checked_against_the_costliest_hash() {
        let (users, _) = Users::parse(FILE, "users");
        let Lookup::Unknown(Some(decoy)) = users.lookup("nobody") else {
            panic!("no decoy");
        };
        assert!(matches!(
            decoy,
            PasswordHash::ShaCrypt { rounds: 12000, .. }
        ));
        let (none, _) = Users::parse("", "users");
        assert!(matches!(none.lookup("nobody"), Lookup::Unknown(None)));
    }

    #[test]
    fn unusable_lines_are_warnings_naming_their_line_and_the_rest_works() {
        let text = "\
a:{PLAIN}x
nocolon
:{PLAIN}x
des:abNANd1rDfiNc
b:$6$broken
c:{SHA}notbase64!
d:$2y$05$short
a:{PLAIN}y
e:$7$whatever
f:$1$nodollar
";
        let (users, warnings) = Users::parse(text, "users");
        let expected = [
            (2, "expected \"user:hash\""),
            (3, "empty user name"),
            (
                4,
                "user \"des\" cannot log in: DES crypt(3) hash not supported",
            ),
            (5, "user \"b\" cannot log in: malformed SHA-crypt"),
            (6, "user \"c\" cannot log in: malformed {SHA} hash"),
            (7, "user \"d\" cannot log in: malformed bcrypt hash"),
            (8, "duplicate user \"a\""),
            (9, "user \"e\" cannot log in: unknown password hash format"),
            (10, "user \"f\" cannot log in: malformed MD5-crypt hash"),
        ];
        assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
        for (warning, (line, why)) in warnings.iter().zip(expected) {
            assert!(warning.starts_with(why), "{warning}");
            assert!(warning.ends_with(&format!(" in users:{line}")), "{warning}");
        }
        let Lookup::Known(a) = users.lookup("a") else {
            panic!("a is unknown");
        };
        assert!(a.verify("x") && !a.verify("y"), "the first line for a wins");
        for user in ["des", "b", "c", "d", "e", "f"] {
            assert!(matches!(users.lookup(user), Lookup::Unknown(_)), "{user}");
        }
    }
}
