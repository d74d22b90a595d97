//! Proxy authentication: `auth_basic` and `auth_basic_user_file`, answered the way a proxy
//! must — `407` with `Proxy-Authenticate`, credentials read from `Proxy-Authorization`.
//!
//! The user file takes the htpasswd formats nginx accepts that still matter: bcrypt (`$2y$`,
//! `htpasswd -B`), Apache MD5 (`$apr1$`, htpasswd's default), `{SHA}`, `{SSHA}` and `{PLAIN}`.
//! Every hash comes from a crate, every comparison is constant-time, and bcrypt runs off the
//! event loop. Credentials that verified are remembered briefly (by a digest, never in clear)
//! so a keep-alive client does not pay a bcrypt per request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::config::ConfigError;

/// How long verified credentials are remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// How many verified credentials are remembered.
const REMEMBERED: usize = 1024;

/// A stored password hash.
#[derive(Clone)]
enum PasswordHash {
    Bcrypt(String),
    Apr1 { salt: String, full: String },
    Sha1(Vec<u8>),
    Ssha { digest: Vec<u8>, salt: Vec<u8> },
    Plain(String),
}

impl PasswordHash {
    fn parse(text: &str) -> Result<PasswordHash, &'static str> {
        if text.starts_with("$2y$") || text.starts_with("$2a$") || text.starts_with("$2b$") {
            text.parse::<bcrypt::HashParts>()
                .map_err(|_| "malformed bcrypt hash")?;
            return Ok(PasswordHash::Bcrypt(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, _) = rest.split_once('$').ok_or("malformed $apr1$ hash")?;
            return Ok(PasswordHash::Apr1 {
                salt: salt.to_string(),
                full: text.to_string(),
            });
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
        Err(
            "unsupported password hash (use bcrypt: htpasswd -B, or $apr1$, {SHA}, {SSHA}, {PLAIN})",
        )
    }

    /// Slow for bcrypt by design: call it off the event loop.
    fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Apr1 { salt, full } => {
                let computed = htpasswd_verify::md5::format_hash(
                    &htpasswd_verify::md5::md5_apr1_encode(password, salt),
                    salt,
                );
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

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Users and their hashes, from an htpasswd file.
#[derive(Clone, Default)]
pub struct Users {
    hashes: HashMap<String, PasswordHash>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} entries)", self.hashes.len())
    }
}

impl Users {
    /// Reads an htpasswd file; a malformed line is an error naming `file:line`.
    pub fn load(path: &Path) -> Result<Users, ConfigError> {
        let shown = path.display().to_string();
        let text = crate::config::read_config_file(path)
            .and_then(|bytes| {
                String::from_utf8(bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })
            .map_err(|e| {
                ConfigError::whole_file(format!("cannot read the user file \"{shown}\": {e}"))
            })?;
        Users::parse(&text, &shown)
    }

    pub fn parse(text: &str, file: &str) -> Result<Users, ConfigError> {
        let mut hashes = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index as u32 + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| ConfigError::at(file, line_no, why.to_string());
            let mut fields = line.splitn(3, ':');
            let (Some(user), Some(hash)) = (fields.next(), fields.next()) else {
                return Err(bad("expected \"user:hash\""));
            };
            if user.is_empty() {
                return Err(bad("empty user name"));
            }
            let hash = PasswordHash::parse(hash).map_err(bad)?;
            if hashes.insert(user.to_string(), hash).is_some() {
                return Err(bad(&format!("duplicate user \"{user}\"")));
            }
        }
        Ok(Users { hashes })
    }
}

/// `auth_basic` with its users, and the credentials recently verified.
#[derive(Debug)]
pub struct Auth {
    pub realm: String,
    users: Arc<Users>,
    remembered: Mutex<HashMap<[u8; 20], (String, Instant)>>,
}

impl Auth {
    pub fn new(realm: String, users: Users) -> Auth {
        Auth {
            realm,
            users: Arc::new(users),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// The user a `Proxy-Authorization` value proves, or `None`.
    pub async fn check(&self, header: Option<&[u8]>) -> Option<String> {
        let header = header?;
        let key: [u8; 20] = Sha1::digest(header).into();
        if let Some(user) = self.recall(&key) {
            return Some(user);
        }
        let (user, password) = decode_basic(header)?;
        let hash = self.users.hashes.get(&user)?.clone();
        let verified = tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false);
        if !verified {
            return None;
        }
        self.remember(key, &user);
        Some(user)
    }

    fn recall(&self, key: &[u8; 20]) -> Option<String> {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        let (user, since) = remembered.get(key)?;
        (since.elapsed() < REMEMBER).then(|| user.clone())
    }

    fn remember(&self, key: [u8; 20], user: &str) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= REMEMBERED {
            remembered.retain(|_, (_, since)| since.elapsed() < REMEMBER);
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(key, (user.to_string(), Instant::now()));
    }
}

/// `Basic base64(user:password)` → (user, password).
fn decode_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes of "secret" made by other tools: Python's bcrypt, `openssl passwd -apr1`,
    /// `openssl dgst -sha1`, and Python's hashlib for {SSHA} (salt "salt").
    const FILE: &str = "\
# users
bob:$2y$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK
amy:$apr1$MsHVxMyB$6JwV36VuoPpYZGjFzjFSm1
sam:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
sue:{SSHA}gVK8WC9YyFT1gMsQHTGCgT3sSv5zYWx0
pat:{PLAIN}secret
";

    fn header(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", BASE64.encode(format!("{user}:{password}"))).into_bytes()
    }

    #[tokio::test]
    async fn every_format_verifies_the_right_password_only() {
        let auth = Auth::new("r".into(), Users::parse(FILE, "users").unwrap());
        for user in ["bob", "amy", "sam", "sue", "pat"] {
            assert_eq!(
                auth.check(Some(&header(user, "secret"))).await.as_deref(),
                Some(user),
                "{user}"
            );
            assert_eq!(
                auth.check(Some(&header(user, "wrong"))).await,
                None,
                "{user}"
            );
        }
        assert_eq!(auth.check(Some(&header("nobody", "secret"))).await, None);
        assert_eq!(auth.check(None).await, None);
        assert_eq!(auth.check(Some(b"Bearer abc")).await, None);
        assert_eq!(auth.check(Some(b"Basic !!!")).await, None);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        for (text, line, why) in [
            ("a:{PLAIN}x\nnocolon\n", 2, "expected \"user:hash\""),
            ("\n\n:{PLAIN}x\n", 3, "empty user name"),
            ("a:$1$abc$def\n", 1, "unsupported password hash"),
            ("a:{SHA}notbase64!\n", 1, "malformed {SHA} hash"),
            ("a:$2y$05$short\n", 1, ""),
            ("a:{PLAIN}x\na:{PLAIN}y\n", 2, "duplicate user \"a\""),
        ] {
            let error = Users::parse(text, "users")
                .err()
                .unwrap_or_else(|| panic!("{text:?} was accepted"));
            let message = error.to_string();
            assert!(message.ends_with(&format!(" in users:{line}")), "{message}");
            assert!(message.contains(why), "{message}");
        }
    }
}
