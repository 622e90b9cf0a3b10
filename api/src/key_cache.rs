//! The API's cache of successful authentications (used by `crate::auth`): the key and its
//! merchant by the SHA-256 of the presented key, each trusted for a second at most; and when
//! this process last wrote each key's `last_used_at` (at most once a minute per key, so the hot
//! path makes no write per request).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use depositd_core::api_key::ApiKey;
use depositd_core::merchant::Merchant;
use depositd_core::store::api_keys;
use uuid::Uuid;

/// `last_used_at` is kept to this precision: a key's use is written at most this often.
pub const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);

/// How long a successful authentication is trusted without asking the database again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// At most this many keys are remembered (past it, the expired ones are dropped, then all).
const KEY_CACHE_CAPACITY: usize = 100_000;

/// Successful authentications by the SHA-256 of the key (never the key itself), each trusted for
/// [`KEY_CACHE_TTL`] from before the database read that produced it, and only while this
/// process has made no write to keys or merchants since that read. Failures are not cached.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, Cached>>,
    /// When this process last noted each key's use (see [`KeyCache::use_is_due`]).
    noted_use: std::sync::Mutex<HashMap<Uuid, Instant>>,
}

struct Cached {
    authenticated: (ApiKey, Merchant),
    /// When the read that produced it started.
    read_at: Instant,
    /// `api_keys::changes()` before that read.
    changes: u64,
}

impl KeyCache {
    pub fn get(&self, hash: &str) -> Option<(ApiKey, Merchant)> {
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cached = entries.get(hash)?;
        (cached.read_at.elapsed() < KEY_CACHE_TTL && cached.changes == api_keys::changes())
            .then(|| cached.authenticated.clone())
    }

    /// Whether key `id`'s use should be written now: not noted by this process within
    /// [`LAST_USED_GRANULARITY`]. Saying yes notes it (the write is the caller's).
    pub fn use_is_due(&self, id: Uuid) -> bool {
        let mut noted = self.noted_use.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if noted.get(&id).is_some_and(|at| now.duration_since(*at) < LAST_USED_GRANULARITY) {
            return false;
        }
        if noted.len() >= KEY_CACHE_CAPACITY {
            noted.retain(|_, at| now.duration_since(*at) < LAST_USED_GRANULARITY);
        }
        noted.insert(id, now);
        true
    }

    pub fn put(&self, hash: String, authenticated: (ApiKey, Merchant), read_at: Instant, changes: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= KEY_CACHE_CAPACITY && !entries.contains_key(&hash) {
            entries.retain(|_, cached| cached.read_at.elapsed() < KEY_CACHE_TTL);
            if entries.len() >= KEY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash, Cached { authenticated, read_at, changes });
    }
}
