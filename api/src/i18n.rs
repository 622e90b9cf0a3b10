//! The checkout page's languages: one translation table (`api/i18n/checkout.toml`, compiled
//! into the binary) and the choice of language for a request.
//!
//! The page is rendered in the language of `?lang=` when the table has it, else the first
//! language of the browser's `Accept-Language` (by quality, matched on the primary subtag: `de-AT`
//! gets `de`) that the table has, else English. The script on the page gets the same table (a
//! data attribute), so what it writes is in the page's language too.

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The language every other table is checked against, and the fallback.
pub const DEFAULT: &str = "en";

type Table = BTreeMap<String, String>;

static TABLES: LazyLock<BTreeMap<String, Table>> = LazyLock::new(|| {
    toml::from_str(include_str!("../i18n/checkout.toml")).expect("api/i18n/checkout.toml is a table of tables")
});

/// One language's words.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    pub lang: &'static str,
    table: &'static Table,
}

impl Text {
    /// The string for `key`; a key the table lacks shows as itself (the unit tests keep that
    /// from shipping).
    pub fn get<'a>(&self, key: &'a str) -> &'a str {
        self.table.get(key).map(String::as_str).unwrap_or(key)
    }

    /// `key`'s string with each `{name}` replaced by its value.
    pub fn fill(&self, key: &str, values: &[(&str, &str)]) -> String {
        values.iter().fold(self.get(key).to_owned(), |text, (name, value)| text.replace(&format!("{{{name}}}"), value))
    }

    /// `key`'s string cut at its `{name}` placeholders: text and placeholder names, in order (so a
    /// template can wrap the values in markup whatever the language's word order).
    pub fn parts(&self, key: &str) -> Vec<Part> {
        let mut parts = Vec::new();
        let mut rest = self.get(key);
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else { break };
            if start > 0 {
                parts.push(Part { text: rest[..start].to_owned(), placeholder: false });
            }
            parts.push(Part { text: rest[start + 1..start + len].to_owned(), placeholder: true });
            rest = &rest[start + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part { text: rest.to_owned(), placeholder: false });
        }
        parts
    }

    /// The whole table as JSON, for the page's script.
    pub fn json(&self) -> String {
        serde_json::to_string(self.table).unwrap_or_else(|_| "{}".into())
    }
}

/// A piece of a translated sentence: literal text, or the name of a value to put there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub text: String,
    pub placeholder: bool,
}

/// Every language the table has, with its own name, in tag order.
pub fn languages() -> Vec<(&'static str, &'static str)> {
    TABLES
        .iter()
        .map(|(tag, table)| (tag.as_str(), table.get("language_name").map_or(tag.as_str(), String::as_str)))
        .collect()
}

fn text(lang: &str) -> Option<Text> {
    TABLES.get_key_value(lang).map(|(lang, table)| Text { lang, table })
}

/// The language for a request: `requested` (the `lang` query parameter) if the table has it,
/// else the best of `accept_language` the table has, else English.
pub fn negotiate(requested: Option<&str>, accept_language: Option<&str>) -> Text {
    if let Some(found) = requested.map(str::to_ascii_lowercase).and_then(|lang| text(&lang)) {
        return found;
    }
    accept_language
        .map(accept_language::parse)
        .unwrap_or_default()
        .iter()
        .filter_map(|tag| tag.split('-').next().map(str::to_ascii_lowercase))
        .find_map(|primary| text(&primary))
        .unwrap_or_else(|| text(DEFAULT).expect("the table has English"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_key_and_the_same_placeholders() {
        let en = &TABLES[DEFAULT];
        assert!(TABLES.len() >= 3, "English and at least two more languages");
        let placeholders = |s: &str| {
            let mut names: Vec<String> =
                s.split('{').skip(1).filter_map(|p| p.split_once('}').map(|(n, _)| n.to_owned())).collect();
            names.sort();
            names
        };
        for (lang, table) in TABLES.iter() {
            let keys: Vec<&String> = table.keys().collect();
            assert_eq!(keys, en.keys().collect::<Vec<_>>(), "{lang} has exactly English's keys");
            for (key, value) in table {
                assert!(!value.trim().is_empty(), "{lang}.{key} is empty");
                assert_eq!(placeholders(value), placeholders(&en[key]), "{lang}.{key} fills the same values");
            }
        }
    }

    #[test]
    fn every_key_the_page_and_its_script_use_is_in_the_table() {
        let en = &TABLES[DEFAULT];
        let sources = [
            include_str!("../templates/checkout.html"),
            include_str!("../assets/checkout.js"),
            include_str!("routes/checkout.rs"),
        ];
        let mut used = 0;
        for source in sources {
            for call in ["get(\"", "tr(\"", "fill(\"", "parts(\""] {
                for piece in source.split(call).skip(1) {
                    let key = piece.split('"').next().unwrap();
                    assert!(en.contains_key(key), "{key} is used but not in api/i18n/checkout.toml");
                    used += 1;
                }
            }
        }
        assert!(used > 20, "the scan found the page's keys ({used})");
    }

    #[test]
    fn the_language_comes_from_the_query_then_the_browser_then_english() {
        assert_eq!(negotiate(Some("de"), Some("es")).lang, "de");
        assert_eq!(negotiate(Some("DE"), None).lang, "de");
        assert_eq!(negotiate(Some("xx"), Some("es-MX, en;q=0.5")).lang, "es");
        assert_eq!(negotiate(None, Some("pt-BR, fr;q=0.8, de;q=0.9")).lang, "de");
        assert_eq!(negotiate(None, Some("ja")).lang, "en");
        assert_eq!(negotiate(None, Some(";;;q=garbage,")).lang, "en");
        assert_eq!(negotiate(None, None).lang, "en");
    }

    #[test]
    fn a_sentence_splits_at_its_placeholders_in_the_languages_order() {
        let de = negotiate(Some("de"), None);
        let parts = de.parts("send_exactly");
        let names: Vec<&str> = parts.iter().filter(|p| p.placeholder).map(|p| p.text.as_str()).collect();
        assert_eq!(names, ["amount", "asset", "chain"]);
        assert_eq!(parts[0], Part { text: "Senden Sie genau ".into(), placeholder: false });
        assert_eq!(
            de.fill("status_confirmations", &[("n", "2"), ("m", "5")]),
            "Zahlung erkannt: 2 von 5 Bestätigungen."
        );
    }
}
