//! Secrets that must never reach `Debug` output, logs or error messages.
//!
//! Plain secrets (mnemonic, webhook master key) use [`secrecy::SecretString`]. A database URL is
//! half secret: its host and database name are what an operator needs in an error message, its
//! password is not. [`DatabaseUrl`] keeps both and only ever shows the redacted form, whether the
//! password is in the userinfo, in a query parameter or in a libpq `key=value` string.
//!
//! An RPC URL is a secret from its path on: hosted providers put the API key in the path
//! (`/v2/<key>`), the query (`?apikey=`) or the userinfo. [`RpcUrl`] shows only scheme and host,
//! and [`redact_urls`] does the same to every web URL inside a text (log lines, error chains
//! from HTTP libraries that quote the URL they failed on).

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

    /// The URL with every password replaced by `***`, safe for logs and errors: the userinfo
    /// password, password-like query parameters (`?password=`, `?sslpassword=`), and in a libpq
    /// `key=value` connection string (`host=db password=...`) the password-like values.
    pub fn redacted(&self) -> String {
        if self.0.contains("://") {
            redact_query_secrets(&redact_url_password(&self.0))
        } else if self.0.contains('=') {
            redact_key_value_secrets(&self.0)
        } else {
            self.0.clone()
        }
    }

    /// The scheme before `:` (`sqlite`, `postgres`, ...), lowercased; empty when the string does
    /// not start with one (a `key=value` connection string), so it never echoes the rest.
    pub fn scheme(&self) -> String {
        match self.0.split_once(':') {
            Some((scheme, _)) if is_scheme(scheme) => scheme.to_ascii_lowercase(),
            _ => String::new(),
        }
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

/// An RPC endpoint (http(s) or ws(s)); displayed as scheme and host only
/// (`https://eth-mainnet.g.alchemy.com/…`), because providers' keys live in the rest.
#[derive(Clone, PartialEq, Eq)]
pub struct RpcUrl(String);

impl RpcUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The whole URL, key included: only for handing to the RPC client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Scheme and host (and port), safe for logs, errors and output.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// The scheme before `://`, lowercased (`https`, `wss`, ...).
    pub fn scheme(&self) -> String {
        match self.0.split_once("://") {
            Some((scheme, _)) if is_scheme(scheme) => scheme.to_ascii_lowercase(),
            _ => String::new(),
        }
    }
}

impl From<String> for RpcUrl {
    fn from(url: String) -> Self {
        RpcUrl(url)
    }
}

impl From<&str> for RpcUrl {
    fn from(url: &str) -> Self {
        RpcUrl(url.to_owned())
    }
}

impl fmt::Debug for RpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RpcUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for RpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for RpcUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(RpcUrl)
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `scheme://host[:port]` of a URL, with `/…` when anything (userinfo, path, query, fragment) was
/// left out. Text without `://` is not a URL anyone can use; it is shown as `…`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".to_owned();
    };
    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (had_userinfo, host) = match authority.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, authority),
    };
    // Only something shaped like a host (and port) is shown: in a malformed URL (a `/` inside
    // the password, say) the "host" could be part of a secret.
    let (name, port) = match host.rsplit_once(':') {
        Some((name, _)) if !name.ends_with(']') && name.contains(':') => (host, ""),
        Some((name, port)) => (name, port),
        None => (host, ""),
    };
    let name_ok = !name.is_empty()
        && (name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            || (name.starts_with('[')
                && name.ends_with(']')
                && name[1..name.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')));
    if !name_ok || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return format!("{scheme}://…");
    }
    if had_userinfo || !(tail.is_empty() || tail == "/") {
        format!("{scheme}://{host}/…")
    } else {
        format!("{scheme}://{host}")
    }
}

/// Every `http(s)://` and `ws(s)://` URL in `text` cut to scheme and host (see [`redact_url`]).
/// A URL ends at whitespace, a quote, `<`, `>` or a backslash (JSON escapes); punctuation that
/// closes a sentence or a parenthesis around it is kept.
pub fn redact_urls(text: &str) -> String {
    const SCHEMES: [&str; 4] = ["https://", "http://", "wss://", "ws://"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let found = SCHEMES.iter().filter_map(|s| find_ignore_case(rest, s).map(|at| (at, s.len()))).min();
        let Some((start, scheme_len)) = found else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let url_and_more = &rest[start..];
        let mut end = url_and_more[scheme_len..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`'))
            .map_or(url_and_more.len(), |i| i + scheme_len);
        while end > scheme_len && url_and_more[..end].ends_with([')', ']', ',', '.', ';', ':', '}']) {
            end -= 1;
        }
        out.push_str(&redact_url(&url_and_more[..end]));
        rest = &url_and_more[end..];
    }
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack.as_bytes().windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Replaces the password of `scheme://user:password@host/...` with `***`; other URLs are returned
/// unchanged.
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

/// Whether a connection parameter's name says its value is a secret (`password`, `sslpassword`,
/// `passfile` is a path and stays).
fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    key.contains("password") || key == "pass" || key.contains("secret") || key.contains("token")
}

/// `?a=1&password=x` -> `?a=1&password=***`.
fn redact_query_secrets(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(&percent_decoded(key)) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{base}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Enough percent-decoding to recognise `pass%77ord` as `password`.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A libpq `key=value` string (`host=db password='a b' dbname=x`) with the secret values
/// replaced by `***`. Values may be single-quoted with backslash escapes; anything that does not
/// parse is replaced by `***` from that point on, never echoed.
fn redact_key_value_secrets(conninfo: &str) -> String {
    let mut out = String::new();
    let mut chars = conninfo.char_indices().peekable();
    loop {
        while let Some((_, c)) = chars.peek() {
            if c.is_whitespace() {
                out.push(*c);
                chars.next();
            } else {
                break;
            }
        }
        let Some(&(key_start, _)) = chars.peek() else { return out };
        let mut key_end = key_start;
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key_end = i + c.len_utf8();
            chars.next();
        }
        let key = &conninfo[key_start..key_end];
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            out.push_str(" ***");
            return out;
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push('\\');
                            value.push(escaped);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            if !closed {
                out.push_str(&format!("{key}=***"));
                return out;
            }
            value = format!("'{value}'");
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if is_secret_key(key) {
            out.push_str(&format!("{key}=***"));
        } else {
            out.push_str(&format!("{key}={value}"));
        }
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
            assert_eq!(DatabaseUrl::new(url).redacted(), url);
        }
    }

    #[test]
    fn query_and_key_value_passwords_are_redacted() {
        let url = DatabaseUrl::new("postgres://app@db/x?sslmode=require&password=hunter2&PassWord=b#f");
        assert_eq!(url.redacted(), "postgres://app@db/x?sslmode=require&password=***&PassWord=***#f");
        let url = DatabaseUrl::new("postgresql:///x?host=/run&pass%77ord=hunter2");
        assert_eq!(url.redacted(), "postgresql:///x?host=/run&pass%77ord=***");
        let url = DatabaseUrl::new("host=db port=5432 password=hunter2 dbname=depositd");
        assert_eq!(url.redacted(), "host=db port=5432 password=*** dbname=depositd");
        assert_eq!(url.scheme(), "");
        let url = DatabaseUrl::new("host=db password = 'hun ter\\'2' user=app sslpassword=x");
        assert_eq!(url.redacted(), "host=db password=*** user=app sslpassword=***");
        let url = DatabaseUrl::new("host=db password='unterminated hunter2");
        assert!(!url.redacted().contains("hunter2"), "{}", url.redacted());
        let url = DatabaseUrl::new("host=db stray hunter2");
        assert!(!url.redacted().contains("hunter2"), "{}", url.redacted());
    }

    #[test]
    fn rpc_urls_show_scheme_and_host_only() {
        let url = RpcUrl::new("https://user:pw@eth-mainnet.g.alchemy.com/v2/KEY?apikey=KEY2#x");
        assert_eq!(url.redacted(), "https://eth-mainnet.g.alchemy.com/…");
        assert!(!format!("{url:?}{url}").contains("KEY"));
        assert_eq!(RpcUrl::new("http://127.0.0.1:8545").redacted(), "http://127.0.0.1:8545");
        assert_eq!(RpcUrl::new("http://127.0.0.1:8545/").redacted(), "http://127.0.0.1:8545");
        assert_eq!(RpcUrl::new("wss://node.example/ws/KEY").redacted(), "wss://node.example/…");
        assert_eq!(RpcUrl::new("not a url KEY").redacted(), "…");
        assert_eq!(RpcUrl::new("https://user:pa/ssKEY@host/").redacted(), "https://…");
        assert_eq!(RpcUrl::new("https://user:KEY@[::1]:8545/x").redacted(), "https://[::1]:8545/…");
        assert_eq!(RpcUrl::new("https://KEY:x/").redacted(), "https://…");
    }

    #[test]
    fn urls_inside_text_are_cut_to_their_host() {
        let text = "error sending request for url (https://a:KEY@host.example/v2/KEY?k=KEY): refused; \
                    {\"url\":\"wss://h.example:8546/KEY\"} HTTP://X.EXAMPLE/KEY. sqlite://keep/me";
        let shown = redact_urls(text);
        assert!(!shown.contains("KEY"), "{shown}");
        assert_eq!(
            shown,
            "error sending request for url (https://host.example/…): refused; \
             {\"url\":\"wss://h.example:8546/…\"} HTTP://X.EXAMPLE/…. sqlite://keep/me"
        );
    }
}
