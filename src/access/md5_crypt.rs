//! MD5-crypt (`$1$`, glibc's crypt(3)) and its Apache twin (`$apr1$`, htpasswd's old default).
//!
//! The one piece of hand-written cryptography in sluice: no maintained crate implements these
//! (the one that did pulls the unmaintained `rust-crypto`), so this is the published scheme
//! written once on top of the `md-5` crate, and checked against vectors made by
//! `openssl passwd -1` and `openssl passwd -apr1` (see the tests below and tests/auth.rs).

use md5::{Digest, Md5};

/// crypt(3)'s base-64 alphabet.
const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The full hash string (`{magic}{salt}${22 characters}`) of `password`. `magic` is `$1$` or
/// `$apr1$`; `salt` is cut at 8 characters, as every implementation does.
pub fn md5_crypt(password: &[u8], magic: &str, salt: &str) -> String {
    let salt = &salt.as_bytes()[..salt.len().min(8)];

    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut context = Md5::new()
        .chain_update(password)
        .chain_update(magic.as_bytes())
        .chain_update(salt);
    for chunk in password.chunks(16) {
        context.update(&alternate[..chunk.len()]);
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();

    // 1000 rounds, each mixing the password, the salt and the previous digest.
    for round in 0..1000 {
        let mut context = Md5::new();
        if round % 2 == 1 {
            context.update(password);
        } else {
            context.update(digest);
        }
        if round % 3 != 0 {
            context.update(salt);
        }
        if round % 7 != 0 {
            context.update(password);
        }
        if round % 2 == 1 {
            context.update(digest);
        } else {
            context.update(password);
        }
        digest = context.finalize();
    }

    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(magic);
    out.push_str(std::str::from_utf8(salt).unwrap_or_default());
    out.push('$');
    let mut encode = |value: u32, chars: usize| {
        for shift in 0..chars {
            out.push(ALPHABET[(value >> (6 * shift)) as usize & 0x3f] as char);
        }
    };
    for [a, b, c] in [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]] {
        let value = u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]);
        encode(value, 4);
    }
    encode(u32::from(digest[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::md5_crypt;

    /// Made with `openssl passwd -1 -salt SALT PASSWORD` and `openssl passwd -apr1 …`.
    const VECTORS: &[(&str, &str, &str, &str)] = &[
        ("$1$", "X", "pw", "$1$X$cVCRz773kZlpIlgDZ.0PV."),
        ("$apr1$", "X", "pw", "$apr1$X$QvF9WF.q2RqZT4Lld5RuI1"),
        (
            "$1$",
            "saltsalt",
            "secret",
            "$1$saltsalt$9xy1btjgzLYfb7hivXtC//",
        ),
        (
            "$apr1$",
            "saltsalt",
            "secret",
            "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0",
        ),
        ("$1$", "a", "", "$1$a$8CfZSfErbeskipdhZHtvu."),
        ("$apr1$", "a", "", "$apr1$a$lsAcX0kKaMIVmrCtUuk5b0"),
        (
            "$1$",
            "12345678",
            "a-much-longer-password-than-sixteen-bytes",
            "$1$12345678$7CR1riJlYT1pTzt60AZZq/",
        ),
        (
            "$apr1$",
            "12345678",
            "a-much-longer-password-than-sixteen-bytes",
            "$apr1$12345678$/Az/qRqc4UNrNHoqSr0bJ1",
        ),
        (
            "$1$",
            "ab/.Z9",
            "p@ss:word",
            "$1$ab/.Z9$MY4hbDqDF8nzXI0nEM4gJ0",
        ),
        (
            "$apr1$",
            "ab/.Z9",
            "p@ss:word",
            "$apr1$ab/.Z9$p33Vb1Fzbj4gLWmsKSVWO0",
        ),
        // htpasswd's own output for "secret" (tests/access.rs has used it from the start).
        (
            "$apr1$",
            "MsHVxMyB",
            "secret",
            "$apr1$MsHVxMyB$6JwV36VuoPpYZGjFzjFSm1",
        ),
    ];

    #[test]
    fn matches_openssl_vectors() {
        for &(magic, salt, password, expected) in VECTORS {
            assert_eq!(md5_crypt(password.as_bytes(), magic, salt), expected);
        }
    }

    #[test]
    fn a_salt_longer_than_8_is_cut() {
        assert_eq!(
            md5_crypt(b"secret", "$1$", "saltsaltEXTRA"),
            "$1$saltsalt$9xy1btjgzLYfb7hivXtC//"
        );
    }
}
