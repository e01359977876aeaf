//! Standard Webhooks signatures (spec v1.0.0, symmetric `v1`).
//!
//! The forwarder signs every POST to the platform; the leg-announcement endpoint and the
//! platform simulator verify. Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`,
//! HMAC-SHA256 keyed with the base64-decoded part of a `whsec_` secret; the header is a
//! space-separated list of `v1,<base64>` so two secrets can be valid during a rotation.
//!
//! ```
//! use webhook_signature::{SigningSecret, sign_header, verify};
//!
//! let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let header = sign_header(&[secret.clone()], "msg_1", 1_700_000_000, b"{}");
//! assert!(verify(&[secret], "msg_1", "1700000000", &header, b"{}", 1_700_000_010, 300).is_ok());
//! ```
//!
//! *Invariant:* no IO, no clock: the current time is an argument. Secrets never appear in
//! `Debug` output.

#![warn(missing_docs)]

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The reference libraries' default tolerance between `webhook-timestamp` and now.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// A `whsec_` signing secret (the decoded key bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// A secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The base64 after `whsec_` (or the whole value) does not decode.
    #[error("the secret is not base64 (expected \"whsec_\" followed by base64)")]
    NotBase64,
    /// Shorter than the spec's minimum of 24 bytes.
    #[error("the secret is {0} bytes; Standard Webhooks requires 24 to 64 random bytes")]
    TooShort(usize),
    /// Longer than the spec's maximum of 64 bytes.
    #[error("the secret is {0} bytes; Standard Webhooks requires 24 to 64 random bytes")]
    TooLong(usize),
}

impl SigningSecret {
    /// Parses `whsec_<base64>` (the prefix is optional; surrounding whitespace, such as the
    /// newline at the end of a secret file, is ignored).
    pub fn parse(text: &str) -> Result<SigningSecret, SecretError> {
        let text = text.trim();
        let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
        match key.len() {
            n if n < 24 => Err(SecretError::TooShort(n)),
            n if n > 64 => Err(SecretError::TooLong(n)),
            _ => Ok(SigningSecret(key)),
        }
    }

    /// A secret from raw key bytes (for tests and generators).
    pub fn from_bytes(key: Vec<u8>) -> SigningSecret {
        SigningSecret(key)
    }

    /// The `whsec_` form.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, msg_id: &str, timestamp: u64, body: &[u8]) -> String {
        let mac = self.mac(msg_id, timestamp, body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn mac(&self, msg_id: &str, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The `webhook-signature` header value: one `v1,` signature per secret, space-separated.
pub fn sign_header(secrets: &[SigningSecret], msg_id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A `webhook-*` header is missing or empty.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer of seconds.
    #[error("webhook-timestamp is not an integer")]
    BadTimestamp,
    /// The timestamp is further than the tolerance from now (a replay, or a skewed clock).
    #[error("webhook-timestamp is {0} s away from now (tolerance exceeded)")]
    Stale(u64),
    /// No `v1` signature in the header matches any of our secrets.
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a request against any of `secrets` (two during a rotation), in constant time per
/// comparison, with `tolerance_secs` around `now_secs`.
pub fn verify(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    if msg_id.is_empty() {
        return Err(VerifyError::MissingHeader("webhook-id"));
    }
    if timestamp.is_empty() {
        return Err(VerifyError::MissingHeader("webhook-timestamp"));
    }
    if signature_header.trim().is_empty() {
        return Err(VerifyError::MissingHeader("webhook-signature"));
    }
    let ts: u64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now_secs.abs_diff(ts);
    if skew > tolerance_secs {
        return Err(VerifyError::Stale(skew));
    }
    let candidates: Vec<Vec<u8>> = signature_header
        .split_whitespace()
        .filter_map(|sig| sig.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    for secret in secrets {
        for candidate in &candidates {
            if secret.mac(msg_id, ts, body).verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn reference(secret: &str) -> standardwebhooks::Webhook {
        standardwebhooks::Webhook::new(secret).unwrap()
    }

    fn headers(id: &str, ts: u64, sig: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn matches_the_reference_implementation() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let body = br#"{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","status":"connected"}"#;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let ours = secret.sign("0b0cc1d2-6c1e-5b9a-8f3e-1f2a3b4c5d6e", now, body);
        // The reference library verifies our signature …
        reference(SECRET).verify(body, &headers("0b0cc1d2-6c1e-5b9a-8f3e-1f2a3b4c5d6e", now, &ours)).unwrap();
        // … and produces the same one.
        let theirs = reference(SECRET).sign("0b0cc1d2-6c1e-5b9a-8f3e-1f2a3b4c5d6e", now as i64, body).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let old = SigningSecret::parse(SECRET).unwrap();
        let new = SigningSecret::from_bytes(vec![7; 32]);
        let header = sign_header(&[old.clone(), new.clone()], "id", 100, b"x");
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&[old], "id", "100", &header, b"x", 100, 300).is_ok());
        assert!(verify(&[new], "id", "100", &header, b"x", 100, 300).is_ok());
        let other = SigningSecret::from_bytes(vec![9; 32]);
        assert_eq!(verify(&[other], "id", "100", &header, b"x", 100, 300), Err(VerifyError::NoMatch));
    }

    #[test]
    fn refusals() {
        let s = SigningSecret::parse(SECRET).unwrap();
        let good = s.sign("id", 1_000, b"body");
        let v = |id, ts, sig: &str, body: &[u8], now| verify(std::slice::from_ref(&s), id, ts, sig, body, now, 300);
        assert_eq!(v("id", "1000", &good, b"body", 1_000), Ok(()));
        assert_eq!(v("id", "1000", &good, b"bodY", 1_000), Err(VerifyError::NoMatch));
        assert_eq!(v("id2", "1000", &good, b"body", 1_000), Err(VerifyError::NoMatch));
        assert_eq!(v("id", "1001", &good, b"body", 1_000), Err(VerifyError::NoMatch));
        assert_eq!(v("id", "1000", &good, b"body", 1_301), Err(VerifyError::Stale(301)));
        assert_eq!(v("id", "1000", &good, b"body", 699), Err(VerifyError::Stale(301)));
        assert_eq!(v("id", "abc", &good, b"body", 1_000), Err(VerifyError::BadTimestamp));
        assert_eq!(v("", "1000", &good, b"body", 1_000), Err(VerifyError::MissingHeader("webhook-id")));
        assert_eq!(v("id", "1000", "", b"body", 1_000), Err(VerifyError::MissingHeader("webhook-signature")));
        assert_eq!(v("id", "1000", "v1a,abc v2,xyz", b"body", 1_000), Err(VerifyError::NoMatch));
    }

    #[test]
    fn secret_parsing() {
        assert!(SigningSecret::parse(&format!("{SECRET}\n")).is_ok());
        assert!(SigningSecret::parse(SECRET.trim_start_matches("whsec_")).is_ok());
        assert_eq!(SigningSecret::parse("whsec_!!!"), Err(SecretError::NotBase64));
        assert_eq!(SigningSecret::parse("whsec_c2hvcnQ="), Err(SecretError::TooShort(5)));
        let long = SigningSecret::from_bytes(vec![1; 65]).to_whsec();
        assert_eq!(SigningSecret::parse(&long), Err(SecretError::TooLong(65)));
        let s = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(SigningSecret::parse(&s.to_whsec()).unwrap(), s);
        assert_eq!(format!("{s:?}"), "SigningSecret(<redacted>)");
    }

    proptest! {
        #[test]
        fn sign_then_verify(key in proptest::collection::vec(any::<u8>(), 24..=64), id in "[a-z0-9_-]{1,40}", ts in 0u64..4_000_000_000, body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let s = SigningSecret::from_bytes(key);
            let header = s.sign(&id, ts, &body);
            prop_assert!(verify(std::slice::from_ref(&s), &id, &ts.to_string(), &header, &body, ts, 0).is_ok());
            let mut tampered = body.clone();
            tampered.push(b'!');
            prop_assert_eq!(verify(&[s], &id, &ts.to_string(), &header, &tampered, ts, 0), Err(VerifyError::NoMatch));
        }
    }
}
