//! Secrets that must never reach `Debug` output, logs or error messages.
//!
//! Plain secrets (mnemonic, webhook master key) use [`secrecy::SecretString`]. A database URL is
//! half secret: its host and database name are what an operator needs in an error message, its
//! password is not. [`DatabaseUrl`] keeps both and only ever shows the redacted form.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A database connection URL whose password is redacted wherever it is displayed.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for handing to the database driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, safe for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }

    /// The scheme before `:` (`sqlite`, `postgres`, ...), lowercased.
    pub fn scheme(&self) -> String {
        self.0.split(':').next().unwrap_or_default().to_ascii_lowercase()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(DatabaseUrl)
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`; other URLs are returned
/// unchanged. Also used for RPC URLs, which often carry an API key in the userinfo.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_everywhere_it_could_be_shown() {
        let url = DatabaseUrl::new("postgres://app:hunter2@db.internal:5432/depositd?sslmode=require");
        assert_eq!(url.redacted(), "postgres://app:***@db.internal:5432/depositd?sslmode=require");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!format!("{url}").contains("hunter2"));
        assert_eq!(url.scheme(), "postgres");
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for url in ["sqlite://./data/depositd.db", "postgres://postgres@127.0.0.1/x", "http://h/p@x"] {
            assert_eq!(redact_url_password(url), url);
        }
    }
}
