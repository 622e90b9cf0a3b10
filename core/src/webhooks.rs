//! Webhooks, the parts every crate shares: the words of the event types merchants can subscribe
//! to (the types themselves are `event::EventType`), signing secrets (generated, shown once,
//! encrypted at rest) and Standard Webhooks signatures.
//!
//! Signing follows the Standard Webhooks specification: a secret is `whsec_<base64 key>`, and a
//! delivery carries `webhook-id` (the event id, the same on every redelivery), `webhook-timestamp`
//! (epoch seconds) and `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//! one space-separated signature per valid secret (two during a rotation's grace period).
//!
//! Delivery itself (the worker, the SSRF guard) is the `depositd-webhooks` crate; what is queued,
//! `outbox`; the queue's rows, `store::webhooks`. A merchant's registered [`Endpoint`] is here.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

use crate::event::EventType;

/// Every event type depositd emits, by its word, in [`EventType::ALL`]'s order: what a merchant
/// can subscribe to (listing none subscribes to all) and filter events by, and the OpenAPI enum.
pub const EVENT_TYPES: &[&str] = &{
    let mut words = [""; EventType::ALL.len()];
    let mut i = 0;
    while i < words.len() {
        words[i] = EventType::ALL[i].as_str();
        i += 1;
    }
    words
};

/// Random bytes in a new signing secret (the specification allows 24 to 64).
const SECRET_BYTES: usize = 32;

/// A fresh signing secret, `whsec_<base64 of 32 random bytes>`.
pub fn generate_secret() -> SecretString {
    let mut key = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    SecretString::from(format!("whsec_{}", BASE64.encode(key)))
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Deliberately without the value.
    #[error("a stored webhook secret cannot be decrypted (was the mnemonic or wallet.sealing_key changed?)")]
    Decrypt,
    #[error("a webhook secret is not `whsec_` followed by base64")]
    Malformed,
}

/// Encrypts signing secrets for storage with a key derived from the mnemonic
/// (`HdWallet::webhook_secrets_key`; a process without the mnemonic is given that same key as
/// `wallet.sealing_key`): a database dump alone does not reveal them.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([REDACTED])")
    }
}

impl SecretBox {
    pub fn new(key: [u8; 32]) -> SecretBox {
        SecretBox { cipher: XChaCha20Poly1305::new(&key.into()) }
    }

    /// `v1:<base64 of 24-byte nonce || ciphertext>`.
    pub fn seal(&self, secret: &SecretString) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), secret.expose_secret().as_bytes())
            .expect("XChaCha20-Poly1305 encrypts any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("v1:{}", BASE64.encode(out))
    }

    pub fn open(&self, stored: &str) -> Result<SecretString, SecretError> {
        let bytes = stored.strip_prefix("v1:").and_then(|b| BASE64.decode(b).ok()).ok_or(SecretError::Decrypt)?;
        if bytes.len() < 24 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, sealed) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| SecretError::Decrypt)?;
        let plain = self.cipher.decrypt(&XNonce::from(nonce), sealed).map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map(SecretString::from).map_err(|_| SecretError::Decrypt)
    }
}

/// The `webhook-signature` header for `body` sent as event `id` at `timestamp`, signed with
/// every secret given (space-separated, as the specification has it).
pub fn signature_header(secrets: &[SecretString], id: &str, timestamp: i64, body: &str) -> Result<String, SecretError> {
    let mut signatures = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let key = secret
            .expose_secret()
            .strip_prefix("whsec_")
            .and_then(|k| BASE64.decode(k).ok())
            .ok_or(SecretError::Malformed)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        signatures.push(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())));
    }
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_are_every_event_type_word() {
        let words: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(EVENT_TYPES, words.as_slice());
        assert!(EVENT_TYPES.contains(&"static_address.created") && EVENT_TYPES.contains(&"webhook_endpoint.disabled"));
    }

    #[test]
    fn secrets_round_trip_sealed_and_never_print() {
        let sealer = SecretBox::new([7u8; 32]);
        let secret = generate_secret();
        assert!(secret.expose_secret().starts_with("whsec_"));
        let stored = sealer.seal(&secret);
        assert!(!stored.contains(secret.expose_secret().trim_start_matches("whsec_")));
        assert_eq!(sealer.open(&stored).unwrap().expose_secret(), secret.expose_secret());
        assert!(SecretBox::new([8u8; 32]).open(&stored).is_err(), "another key cannot open it");
        assert_eq!(format!("{sealer:?}"), "SecretBox([REDACTED])");
    }

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = r#"{"test": 2432232314}"#;
        let header = signature_header(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}

/// A merchant's registered endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Event types it receives; empty = every type.
    pub enabled_events: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// The signing secret, sealed (`webhooks::SecretBox`).
    pub secret_sealed: String,
    /// The secret before the last rotation, also signed with until `previous_secret_expires_at`.
    pub previous_secret_sealed: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Sealed secrets are not secrets in the clear, but there is no reason to print them either.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("url", &self.url)
            .field("enabled_events", &self.enabled_events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}
