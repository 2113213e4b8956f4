//! API keys: `llmj_<prefix>_<secret>`. The prefix (12 hex digits, not secret) finds the stored
//! key; the secret (64 hex digits, 256 random bits from the operating system) is proven by its
//! SHA-256, the only form in which it is stored. A fast hash is right here: the secret is
//! random and long, so there is nothing to guess that a slow hash would protect.

use chrono::Utc;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::principal::{ApiKey, KeyLimits};

use super::Role;

/// Start of every key.
pub const KEY_START: &str = "llmj_";
/// Random bytes of the prefix (hex-encoded: twice as many digits).
const PREFIX_BYTES: usize = 6;
/// Random bytes of the secret.
const SECRET_BYTES: usize = 32;

/// A freshly generated key: the whole key (shown once) and its stored form.
pub struct Generated {
    /// `llmj_<prefix>_<secret>`: print once, never store.
    pub key: SecretString,
    /// The stored form.
    pub stored: ApiKey,
}

/// Generates a key for `tenant` with `role`.
///
/// Errors: the operating system's random source failed (then no key can be made safely).
pub fn generate(
    tenant: &str,
    role: Role,
    name: &str,
    limits: KeyLimits,
) -> Result<Generated, getrandom::Error> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut prefix)?;
    getrandom::fill(&mut secret)?;
    let (prefix, secret) = (hex(&prefix), hex(&secret));
    Ok(Generated {
        key: SecretString::from(format!("{KEY_START}{prefix}_{secret}")),
        stored: ApiKey {
            id: uuid::Uuid::now_v7(),
            secret_sha256: sha256_hex(&secret),
            prefix,
            tenant: tenant.to_owned(),
            role,
            name: name.to_owned(),
            limits,
            created_at: Utc::now(),
            revoked_at: None,
        },
    })
}

/// Splits a presented key into (prefix, secret); `None` when it is not shaped like a key.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_START)?;
    let (prefix, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, bytes: usize| {
        s.len() == bytes * 2
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex_of(prefix, PREFIX_BYTES) && hex_of(secret, SECRET_BYTES)).then_some((prefix, secret))
}

/// Whether `secret` is the secret of `key` (compared in constant time).
pub fn verify(key: &ApiKey, secret: &str) -> bool {
    sha256_hex(secret)
        .as_bytes()
        .ct_eq(key.secret_sha256.as_bytes())
        .into()
}

fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn generated_keys_parse_and_verify_and_only_their_hash_is_kept() {
        let g = generate("t", Role::User, "n", KeyLimits::default()).expect("random");
        let key = g.key.expose_secret();
        let (prefix, secret) = parse(key).expect("well-formed");
        assert_eq!(prefix, g.stored.prefix);
        assert!(verify(&g.stored, secret));
        assert!(!g.stored.secret_sha256.contains(secret));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!verify(&g.stored, &wrong));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "sk-abc",
            "llmj_",
            "llmj_abc_def",
            "llmj_0123456789ab",
            "llmj_0123456789AB_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(
            parse(
                "llmj_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000"
            )
            .is_some()
        );
    }
}
