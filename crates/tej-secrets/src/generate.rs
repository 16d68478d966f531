//! Secrets from the operating system's CSPRNG.

use crate::error::{Result, SecretsError};
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use tej_core::Secret;

/// Letters and digits, for secrets that must survive any quoting.
pub const ALPHANUMERIC: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Fewest bits of entropy tej generates.
pub const MIN_BITS: f64 = 128.0;

/// What a generated secret looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "format")]
pub enum SecretFormat {
    /// `bytes` random bytes, hex-encoded (the runbook's `randomBytes(64).toString('hex')`).
    Hex {
        /// Random bytes (the text is twice as long).
        bytes: usize,
    },
    /// `length` characters drawn uniformly from `alphabet`.
    Chars {
        /// Distinct characters to draw from.
        alphabet: String,
        /// Number of characters.
        length: usize,
    },
}

impl Default for SecretFormat {
    fn default() -> Self {
        SecretFormat::Hex { bytes: 64 }
    }
}

impl SecretFormat {
    /// Bits of entropy of one secret.
    pub fn entropy_bits(&self) -> f64 {
        match self {
            SecretFormat::Hex { bytes } => *bytes as f64 * 8.0,
            SecretFormat::Chars { alphabet, length } => {
                let n = alphabet.chars().count();
                if n < 2 {
                    0.0
                } else {
                    *length as f64 * (n as f64).log2()
                }
            }
        }
    }

    /// Checks the format: at least [`MIN_BITS`] of entropy, distinct printable characters.
    pub fn validate(&self) -> Result<()> {
        if let SecretFormat::Chars { alphabet, .. } = self {
            let mut seen: Vec<char> = alphabet.chars().collect();
            if seen.iter().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(SecretsError::InvalidOptions(
                    "the alphabet must not contain whitespace or control characters".into(),
                ));
            }
            let n = seen.len();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != n {
                return Err(SecretsError::InvalidOptions(
                    "the alphabet has repeated characters (that would bias the secret)".into(),
                ));
            }
        }
        let bits = self.entropy_bits();
        if bits < MIN_BITS {
            return Err(SecretsError::InvalidOptions(format!(
                "a secret of this format has {bits:.0} bits of entropy; at least {MIN_BITS:.0} are required"
            )));
        }
        Ok(())
    }
}

/// A new secret from the operating system's CSPRNG.
pub fn generate_secret(format: &SecretFormat) -> Result<Secret> {
    format.validate()?;
    let mut rng = OsRng;
    match format {
        SecretFormat::Hex { bytes } => {
            let mut buf = vec![0u8; *bytes];
            rng.try_fill_bytes(&mut buf)
                .map_err(|e| SecretsError::Random(e.to_string()))?;
            Ok(Secret::new(hex::encode(buf)))
        }
        SecretFormat::Chars { alphabet, length } => {
            let chars: Vec<char> = alphabet.chars().collect();
            let n = chars.len() as u32;
            // rejection sampling over u32 keeps every character equally likely
            let zone = u32::MAX - (u32::MAX % n);
            let mut out = String::with_capacity(*length);
            while out.chars().count() < *length {
                let v = rng
                    .try_next_u32()
                    .map_err(|e| SecretsError::Random(e.to_string()))?;
                if v < zone {
                    out.push(chars[(v % n) as usize]);
                }
            }
            Ok(Secret::new(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_64_bytes_of_hex() {
        let a = generate_secret(&SecretFormat::default()).unwrap();
        let b = generate_secret(&SecretFormat::default()).unwrap();
        assert_eq!(a.expose().len(), 128);
        assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn alphabet_and_length_are_honoured() {
        let f = SecretFormat::Chars {
            alphabet: ALPHANUMERIC.into(),
            length: 40,
        };
        let s = generate_secret(&f).unwrap();
        assert_eq!(s.expose().chars().count(), 40);
        assert!(s.expose().chars().all(|c| ALPHANUMERIC.contains(c)));
        // every character of a small alphabet shows up over many draws
        let f = SecretFormat::Chars {
            alphabet: "abcd".into(),
            length: 400,
        };
        let s = generate_secret(&f).unwrap();
        for c in "abcd".chars() {
            assert!(s.expose().contains(c));
        }
    }

    #[test]
    fn weak_or_biased_formats_are_refused() {
        assert!(generate_secret(&SecretFormat::Hex { bytes: 8 }).is_err());
        let e = generate_secret(&SecretFormat::Chars {
            alphabet: "aab".into(),
            length: 500,
        })
        .unwrap_err();
        assert!(e.to_string().contains("repeated"), "{e}");
        assert!(
            SecretFormat::Chars {
                alphabet: "a b".into(),
                length: 500
            }
            .validate()
            .is_err()
        );
        assert!(SecretFormat::Hex { bytes: 16 }.validate().is_ok());
    }
}
