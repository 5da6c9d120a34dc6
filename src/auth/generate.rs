//! New keys: 32 bytes from the operating system's CSPRNG, URL-safe base64, behind a prefix that
//! makes a leaked key recognisable to people and to secret scanners.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Scope, Scopes, keys};

/// Every generated key starts with this.
pub const PREFIX: &str = "oak_";

/// Random bytes in a key: 256 bits, beyond any guessing.
const KEY_BYTES: usize = 32;

/// A freshly generated key and what the configuration needs of it.
pub struct Generated {
    /// The key itself, shown once to the operator and never stored by the service.
    pub key: String,
    /// Its SHA-256, in lower-case hex: what goes into the configuration.
    pub sha256: String,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generated")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A new random key.
pub fn generate() -> Result<Generated, getrandom::Error> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)?;
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let sha256 = hex::encode(keys::hash(&key));
    Ok(Generated { key, sha256 })
}

/// A default id for a key: `key-` and the first hex digits of its hash (unique enough to tell
/// keys apart in logs, useless for finding the key).
pub fn default_id(generated: &Generated) -> String {
    format!("key-{}", &generated.sha256[..8])
}

/// The `[[auth.keys]]` table for a configuration file (`table` = `"auth.keys"`) or a keys
/// file (`table` = `"keys"`).
pub fn toml_entry(table: &str, id: &str, sha256: &str, scopes: Scopes) -> String {
    let scopes = scopes
        .iter()
        .map(|s| toml::Value::String(s.as_str().into()).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[{table}]]\nid = {}\nsha256 = \"{sha256}\"\nscopes = [{scopes}]\n",
        toml::Value::String(id.into())
    )
}

/// Parses a comma-separated scope list such as `orders:read,orders:write`.
pub fn parse_scopes(list: &str) -> Result<Scopes, String> {
    let names = list.split(',').map(str::trim).filter(|s| !s.is_empty());
    match Scope::parse_all(names) {
        Ok(scopes) if scopes.is_empty() => Err("at least one scope is needed".into()),
        Ok(scopes) => Ok(scopes),
        Err(unknown) => Err(unknown
            .into_iter()
            .map(Scope::unknown)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{KeyStore, RawKey};

    #[test]
    fn generated_keys_are_prefixed_url_safe_distinct_and_match_their_entry() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.key, b.key);
        let body = a.key.strip_prefix(PREFIX).unwrap();
        assert_eq!(body.len(), 43, "32 bytes, unpadded base64");
        assert!(
            body.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(!format!("{a:?}").contains(&a.key));

        let scopes = parse_scopes("orders:read, orders:write").unwrap();
        let entry = toml_entry("keys", &default_id(&a), &a.sha256, scopes);
        let table: toml::Table = entry.parse().unwrap();
        let raw: RawKey = table["keys"].as_array().unwrap()[0]
            .clone()
            .try_into()
            .unwrap();
        let store = KeyStore::new(vec![raw.validate().unwrap()]);
        let (_, principal) = store.find(&a.key).unwrap();
        assert_eq!(principal.scopes, scopes);
        assert!(store.find(&b.key).is_none());
    }

    #[test]
    fn scope_lists_must_name_known_scopes() {
        assert_eq!(
            parse_scopes("orders:read").unwrap(),
            Scopes::of(&[Scope::Read])
        );
        assert!(parse_scopes("orders:read,admin").is_err());
        assert!(parse_scopes("").is_err());
    }
}
