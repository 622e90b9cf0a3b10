//! Merchant authentication: `x-api-key: <key>` or `Authorization: Bearer <key>`, then the key's
//! rate limit. Handlers take [`Authenticated`] and call [`Authenticated::require`] for their scope.
//!
//! A key that authenticated is remembered for at most `key_cache::KEY_CACHE_TTL` (`key_cache::KeyCache`), so a
//! known key costs no database round trip. A revocation or a merchant's deactivation made by
//! another process (an admin command, another API instance on the same database) is honoured
//! within that time; one made by this process at once (the store counts its own writes to keys
//! and merchants: `api_keys::changes`).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use depositd_core::api_key::{ApiKey, Scope};
use depositd_core::config::ChainConfig;
use depositd_core::merchant::Merchant;
use depositd_core::store::api_keys::{self, KeyRejection};
use governor::clock::{Clock, DefaultClock};
use secrecy::{ExposeSecret, SecretString};

use crate::error::ApiError;
use crate::state::AppState;

/// A request made with a valid key of an active merchant.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub key: ApiKey,
    pub merchant: Merchant,
}

impl Authenticated {
    /// 403 unless the key carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.key.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                code: "insufficient_scope",
                message: format!("this API key lacks the `{scope}` scope"),
                param: None,
            })
        }
    }

    /// 403 `key_mode_mismatch` unless the key may create on `chain` (test keys on testnets, live
    /// keys on mainnets); `param` is the request field that named the chain, if one did.
    pub fn may_create_on(&self, chain: &ChainConfig, param: Option<&str>) -> Result<(), ApiError> {
        self.key.mode.check(chain).map_err(|mismatch| ApiError::key_mode_mismatch(mismatch, param))
    }
}

fn presented_key(headers: &HeaderMap) -> Result<SecretString, ApiError> {
    let missing = || ApiError::Unauthenticated {
        code: "missing_api_key",
        message: "send your API key in the x-api-key header or as Authorization: Bearer <key>".into(),
    };
    let malformed =
        || ApiError::Unauthenticated { code: "invalid_api_key", message: "the API key is malformed".into() };
    if let Some(value) = headers.get("x-api-key") {
        let key = value.to_str().map_err(|_| malformed())?.trim();
        return if key.is_empty() { Err(missing()) } else { Ok(SecretString::from(key.to_owned())) };
    }
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| malformed())?;
        let (scheme, key) = value.trim().split_once(' ').ok_or_else(malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
            return Err(malformed());
        }
        return Ok(SecretString::from(key.trim().to_owned()));
    }
    Err(missing())
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Failed authentications are limited per client address, before any key lookup.
        let client = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        let attempt = match client.map(|ip| state.limits.auth_failures.begin(ip)) {
            Some(Err(wait)) => {
                return Err(ApiError::RateLimited {
                    message: "too many failed authentications from this address; retry after the time in Retry-After"
                        .into(),
                    retry_after_secs: wait.as_secs_f64().ceil() as u64,
                });
            }
            Some(Ok(attempt)) => Some(attempt),
            None => None,
        };
        let result = authenticate(parts, state).await;
        if let (Err(ApiError::Unauthenticated { .. }), Some(attempt)) = (&result, attempt) {
            attempt.failed();
        }
        let authenticated = result?;
        note_use(state, authenticated.key.id);
        if let Err(not_until) = state.limits.per_key.check_key(&authenticated.key.id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(ApiError::RateLimited {
                message: "too many requests for this API key; retry after the time in Retry-After".into(),
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            });
        }
        Ok(authenticated)
    }
}

/// Writes key `id`'s `last_used_at` in the background when this process has not for a minute
/// (`KeyCache::use_is_due`); the database keeps it to the minute across processes too. A failed
/// write only costs the precision of that timestamp.
fn note_use(state: &AppState, id: uuid::Uuid) {
    if !state.key_cache.use_is_due(id) {
        return;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        let granularity = crate::key_cache::LAST_USED_GRANULARITY.as_millis() as i64;
        let written = async {
            let mut tx = store.begin().await?;
            api_keys::touch(&mut tx, id, depositd_core::time::now_ms(), granularity).await?;
            tx.commit().await.map_err(depositd_core::store::StoreError::from)
        };
        if let Err(error) = written.await {
            tracing::debug!(api_key_id = %id, %error, "could not note the API key's use");
        }
    });
}

/// The presented key, looked up (in the cache, else the database): the key and its active
/// merchant, or a 401.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Authenticated, ApiError> {
    let presented = presented_key(&parts.headers)?;
    let hash = api_keys::hash_key(presented.expose_secret());
    if let Some((key, merchant)) = state.key_cache.get(&hash) {
        return Ok(Authenticated { key, merchant });
    }
    // Taken before the read: an entry is never trusted longer than the TTL from a state the
    // database held, nor past a write this process made while it was read.
    let (read_at, changes) = (Instant::now(), api_keys::changes());
    let mut conn = state.store.conn().await.map_err(ApiError::internal)?;
    let (key, merchant) = api_keys::authenticate(&mut conn, &presented).await?.map_err(|rejection| {
        let (code, message) = match rejection {
            KeyRejection::Malformed => ("invalid_api_key", "the API key is malformed"),
            KeyRejection::Unknown => ("invalid_api_key", "the API key is not valid"),
            KeyRejection::Revoked => ("api_key_revoked", "the API key has been revoked"),
            KeyRejection::MerchantInactive => ("merchant_inactive", "the shop (merchant account) is inactive"),
        };
        ApiError::Unauthenticated { code, message: message.into() }
    })?;
    state.key_cache.put(hash, (key.clone(), merchant.clone()), read_at, changes);
    Ok(Authenticated { key, merchant })
}
