//! Proxy authentication: `auth_basic` and `auth_basic_user_file`, answered the way a proxy
//! must — `407` with `Proxy-Authenticate`, credentials read from `Proxy-Authorization`.
//!
//! Password hashes are slow on purpose, so a flood of guesses must not become a denial of
//! service. Slow checks run on a few blocking threads (as many as there are cores, for the
//! whole process), at most one at a time per client address (an IPv6 client: its /64), so one
//! noisy client cannot keep everyone else waiting. Answers are remembered by a digest of the
//! credentials (never the password itself): a keep-alive client pays one hash, a repeated
//! wrong password costs nothing, identical attempts in flight share one check, and a
//! remembered answer never waits for a hashing thread. An unknown user is checked against
//! the file's costliest hash, so "no such user" is never the quick answer. The file formats
//! are [`super::htpasswd`]'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use super::htpasswd::{Lookup, Users};

/// How long an answer (right or wrong) is remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// How many verified credentials are remembered.
const REMEMBERED_VERIFIED: usize = 1024;
/// How many refused credentials are remembered.
const REMEMBERED_REFUSED: usize = 4096;
/// Past this many client entries, those not in use are dropped.
const CLIENT_GATES: usize = 1024;
/// Past this many checks under way, those nobody waits for any more are dropped.
const IN_FLIGHT: usize = 1024;

/// The slow checks running at once, process-wide: one per core, so a flood of guesses takes
/// a bounded number of threads and leaves the event loop its CPU share.
static SLOW_CHECKS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// A SHA-256 digest of `user:password`: how credentials are remembered.
type Key = [u8; 32];

/// `auth_basic` with its users, and what was recently decided.
#[derive(Debug)]
pub struct Auth {
    pub realm: String,
    users: Arc<Users>,
    verified: Memory<String>,
    refused: Memory<()>,
    /// Checks under way, so identical attempts wait for one answer instead of hashing again.
    in_flight: Mutex<HashMap<Key, Arc<OnceCell<bool>>>>,
    /// One slow check at a time per client address.
    client_gates: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
    slow_checks: AtomicU64,
}

impl Auth {
    pub fn new(realm: String, users: Users) -> Auth {
        Auth {
            realm,
            users: Arc::new(users),
            verified: Memory::new(REMEMBERED_VERIFIED),
            refused: Memory::new(REMEMBERED_REFUSED),
            in_flight: Mutex::default(),
            client_gates: Mutex::default(),
            slow_checks: AtomicU64::new(0),
        }
    }

    /// The user a `Proxy-Authorization` value from `client` proves, or `None`.
    pub async fn check(&self, header: Option<&[u8]>, client: IpAddr) -> Option<String> {
        let (user, password) = decode_basic(header?)?;
        let key: Key = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update(b":")
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        // Remembered answers never wait for a hashing thread.
        if let Some(user) = self.verified.recall(&key) {
            return Some(user);
        }
        if self.refused.recall(&key).is_some() {
            log::debug!("{client}: a password already refused for {user:?}, refused again");
            return None;
        }
        let shared = {
            let mut in_flight = lock(&self.in_flight);
            if in_flight.len() >= IN_FLIGHT {
                // Left behind by clients that went away mid-check.
                in_flight.retain(|_, shared| Arc::strong_count(shared) > 1);
            }
            Arc::clone(in_flight.entry(key).or_default())
        };
        let verified = *shared
            .get_or_init(|| self.verify(&user, password, client))
            .await;
        {
            let mut in_flight = lock(&self.in_flight);
            if in_flight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &shared)) {
                in_flight.remove(&key);
            }
        }
        if verified {
            self.verified.remember(key, user.clone());
            Some(user)
        } else {
            self.refused.remember(key, ());
            None
        }
    }

    /// How many slow hash checks have run (for tests and diagnosis).
    pub fn slow_checks(&self) -> u64 {
        self.slow_checks.load(Ordering::Relaxed)
    }

    /// Checks `password` against `user`'s hash, or, for an unknown user, against the file's
    /// costliest hash and refuses anyway.
    async fn verify(&self, user: &str, password: String, client: IpAddr) -> bool {
        let (hash, known) = match self.users.lookup(user) {
            Lookup::Known(hash) => (hash.clone(), true),
            Lookup::Unknown(Some(decoy)) => (decoy.clone(), false),
            Lookup::Unknown(None) => return false,
        };
        if !hash.is_slow() {
            return hash.verify(&password) && known;
        }
        let gate = self.client_gate(client).lock_owned().await;
        let Ok(permit) = Arc::clone(&SLOW_CHECKS).acquire_owned().await else {
            return false;
        };
        self.slow_checks.fetch_add(1, Ordering::Relaxed);
        // Both are held until the hash is done, even if the client goes away meanwhile.
        let matched = tokio::task::spawn_blocking(move || {
            let _held = (gate, permit);
            hash.verify(&password)
        })
        .await
        .unwrap_or(false);
        matched && known
    }

    /// The gate of `client`'s address; an IPv6 client is its /64, the block one host gets.
    fn client_gate(&self, client: IpAddr) -> Arc<tokio::sync::Mutex<()>> {
        let client = match client.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
            v4 => v4,
        };
        let mut gates = lock(&self.client_gates);
        if gates.len() >= CLIENT_GATES {
            gates.retain(|_, gate| Arc::strong_count(gate) > 1);
        }
        Arc::clone(gates.entry(client).or_default())
    }
}

/// A bounded, expiring map from credential digests to an answer.
#[derive(Debug)]
struct Memory<V> {
    capacity: usize,
    entries: Mutex<HashMap<Key, (V, Instant)>>,
}

impl<V: Clone> Memory<V> {
    fn new(capacity: usize) -> Memory<V> {
        Memory {
            capacity,
            entries: Mutex::default(),
        }
    }

    fn recall(&self, key: &Key) -> Option<V> {
        let entries = lock(&self.entries);
        let (value, since) = entries.get(key)?;
        (since.elapsed() < REMEMBER).then(|| value.clone())
    }

    fn remember(&self, key: Key, value: V) {
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, since)| since.elapsed() < REMEMBER);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (value, Instant::now()));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn header(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", BASE64.encode(format!("{user}:{password}"))).into_bytes()
    }

    fn auth(file: &str) -> Auth {
        Auth::new("r".into(), Users::parse(file, "users").0)
    }

    #[tokio::test]
    async fn the_right_password_only_and_bad_headers_are_refused() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = auth(&format!("bob:{hash}\npat:{{PLAIN}}secret\n"));
        for user in ["bob", "pat"] {
            let right = auth.check(Some(&header(user, "secret")), CLIENT).await;
            assert_eq!(right.as_deref(), Some(user));
            assert_eq!(auth.check(Some(&header(user, "wrong")), CLIENT).await, None);
        }
        for bad in [&b"Bearer abc"[..], b"Basic !!!", b"Basic Ym9i"] {
            assert_eq!(auth.check(Some(bad), CLIENT).await, None);
        }
        assert_eq!(auth.check(None, CLIENT).await, None);
    }

    #[tokio::test]
    async fn a_repeated_wrong_password_is_refused_from_memory() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = auth(&format!("bob:{hash}\n"));
        for _ in 0..3 {
            assert_eq!(
                auth.check(Some(&header("bob", "wrong")), CLIENT).await,
                None
            );
        }
        assert_eq!(
            auth.slow_checks(),
            1,
            "the same wrong password was hashed again"
        );
        assert_eq!(
            auth.check(Some(&header("bob", "other")), CLIENT).await,
            None
        );
        assert_eq!(auth.slow_checks(), 2);
    }

    #[tokio::test]
    async fn a_verified_password_is_hashed_once() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = auth(&format!("bob:{hash}\n"));
        for _ in 0..3 {
            let user = auth.check(Some(&header("bob", "secret")), CLIENT).await;
            assert_eq!(user.as_deref(), Some("bob"));
        }
        assert_eq!(auth.slow_checks(), 1);
    }

    #[tokio::test]
    async fn identical_attempts_in_flight_share_one_check() {
        let hash = bcrypt::hash("secret", 6).unwrap();
        let auth = Arc::new(auth(&format!("bob:{hash}\n")));
        let attempts: Vec<_> = (0..20)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.check(Some(&header("bob", "wrong")), CLIENT).await })
            })
            .collect();
        for attempt in attempts {
            assert_eq!(attempt.await.unwrap(), None);
        }
        assert_eq!(auth.slow_checks(), 1);
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_client_its_address() {
        let auth = auth("");
        let gate = |ip: &str| auth.client_gate(ip.parse().unwrap());
        assert!(Arc::ptr_eq(
            &gate("2001:db8:1:2::1"),
            &gate("2001:db8:1:2:ffff::9")
        ));
        assert!(!Arc::ptr_eq(
            &gate("2001:db8:1:2::1"),
            &gate("2001:db8:1:3::1")
        ));
        assert!(Arc::ptr_eq(&gate("127.0.0.1"), &gate("::ffff:127.0.0.1")));
        assert!(!Arc::ptr_eq(&gate("127.0.0.1"), &gate("127.0.0.2")));
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_slow_check_too() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = auth(&format!("bob:{hash}\n"));
        assert_eq!(
            auth.check(Some(&header("nobody", "secret")), CLIENT).await,
            None
        );
        assert_eq!(
            auth.slow_checks(),
            1,
            "an unknown user was answered without work"
        );
        // The decoy never lets anyone in, even with the password it was made from.
        assert_eq!(
            auth.check(Some(&header("eve", "secret")), CLIENT).await,
            None
        );
    }
}
