//! The configured keys, known by SHA-256 hash only, and the lookup of a presented token.

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::{KeyTag, Principal, Scope, Scopes};

/// One configured key: an id to log, the hash of the key, and its scopes.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Unique, safe to log.
    pub id: Arc<str>,
    /// SHA-256 of the key's bytes.
    pub sha256: [u8; 32],
    /// What the key may do.
    pub scopes: Scopes,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("sha256", &hex::encode(self.sha256))
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// A key entry as written in TOML (`[[auth.keys]]` or `[[keys]]` in a keys file), before
/// validation. Fields are optional so that every missing one is reported, not the first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// `id`
    pub id: Option<String>,
    /// `sha256`: 64 hex digits.
    pub sha256: Option<String>,
    /// `scopes`: names from [`Scope::ALL`].
    pub scopes: Option<Vec<String>>,
}

/// Longest accepted key id.
const MAX_ID_LEN: usize = 64;

impl RawKey {
    /// Validates the entry; on failure, every problem as `(field, message)`. Messages never
    /// repeat a `sha256` value that is not a hash: it may be a key pasted in the wrong place.
    pub fn validate(self) -> Result<ApiKey, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let id = self.id.unwrap_or_default();
        if id.is_empty() {
            problems.push(("id", "missing or empty".to_string()));
        } else if id.len() > MAX_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            problems.push((
                "id",
                format!("{id:?}: up to {MAX_ID_LEN} letters, digits, '-', '_', '.' or ':'"),
            ));
        }
        let sha256 = match self.sha256.as_deref().map(parse_sha256) {
            Some(Some(hash)) => hash,
            Some(None) => {
                problems.push((
                    "sha256",
                    "expected 64 hex digits, the SHA-256 of the key (never the key itself; \
                     `orders-api keys generate` prints both)"
                        .to_string(),
                ));
                [0; 32]
            }
            None => {
                problems.push(("sha256", "missing".to_string()));
                [0; 32]
            }
        };
        let names = self.scopes.unwrap_or_default();
        let scopes = match Scope::parse_all(names.iter().map(String::as_str)) {
            Ok(scopes) if scopes.is_empty() => {
                problems.push(("scopes", "at least one scope is needed".to_string()));
                scopes
            }
            Ok(scopes) => scopes,
            Err(unknown) => {
                problems.extend(unknown.into_iter().map(|n| ("scopes", Scope::unknown(n))));
                Scopes::default()
            }
        };
        if problems.is_empty() {
            Ok(ApiKey {
                id: id.into(),
                sha256,
                scopes,
            })
        } else {
            Err(problems)
        }
    }
}

/// 64 hex digits (either case) as 32 bytes.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let mut out = [0; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok().map(|()| out)
}

/// SHA-256 of `token`.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The configured keys, ready for lookups.
#[derive(Debug)]
pub struct KeyStore {
    keys: Vec<ApiKey>,
    /// Each key's rate-limit tag, by position.
    tags: Vec<KeyTag>,
}

impl KeyStore {
    /// A store of `keys` (validated by the configuration: unique ids, real hashes).
    pub fn new(keys: Vec<ApiKey>) -> Self {
        let tags = keys.iter().map(|k| KeyTag::of(&k.id)).collect();
        Self { keys, tags }
    }

    /// The key whose hash matches `token`, with its tag. Every configured hash is compared,
    /// in constant time and without stopping at a match, so the time taken says nothing about
    /// which key, or how much of one, matched.
    pub fn find(&self, token: &str) -> Option<(KeyTag, Principal)> {
        let digest = hash(token);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, key) in self.keys.iter().enumerate() {
            let hit = key.sha256.ct_eq(&digest);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return None;
        }
        let key = self.keys.get(index as usize)?;
        Some((
            *self.tags.get(index as usize)?,
            Principal {
                key_id: key.id.clone(),
                scopes: key.scopes,
            },
        ))
    }

    /// The configured key ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, sha256: &str, scopes: &[&str]) -> RawKey {
        RawKey {
            id: Some(id.into()),
            sha256: Some(sha256.into()),
            scopes: Some(
                scopes
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_keys_rate_limit_tag_follows_its_id_whatever_the_order_or_the_other_keys() {
        let key = |id: &str, token: &str| {
            raw(id, &hex::encode(hash(token)), &["orders:read"])
                .validate()
                .unwrap()
        };
        let before = KeyStore::new(vec![key("ci", "oak_one"), key("shop", "oak_two")]);
        // A reload that adds a key in front and moves the others (as an edited file does).
        let after = KeyStore::new(vec![
            key("new", "oak_new"),
            key("shop", "oak_two"),
            key("ci", "oak_one"),
        ]);
        for token in ["oak_one", "oak_two"] {
            assert_eq!(before.find(token).unwrap().0, after.find(token).unwrap().0);
        }
        let tags: std::collections::HashSet<KeyTag> = ["oak_new", "oak_one", "oak_two"]
            .iter()
            .map(|t| after.find(t).unwrap().0)
            .collect();
        assert_eq!(tags.len(), 3, "each key has buckets of its own");
        // A rotated secret under the same id keeps the client's buckets.
        let rotated = KeyStore::new(vec![key("ci", "oak_rotated")]);
        assert_eq!(
            rotated.find("oak_rotated").unwrap().0,
            before.find("oak_one").unwrap().0
        );
    }

    #[test]
    fn finds_the_matching_key_among_several() {
        let store = KeyStore::new(vec![
            raw("ci", &hex::encode(hash("oak_one")), &["orders:read"])
                .validate()
                .unwrap(),
            raw(
                "shop",
                &hex::encode_upper(hash("oak_two")),
                &["orders:read", "orders:write"],
            )
            .validate()
            .unwrap(),
        ]);
        let (tag, principal) = store.find("oak_two").unwrap();
        assert_eq!(tag, KeyTag::of("shop"));
        assert_eq!(&*principal.key_id, "shop");
        assert!(principal.scopes.contains(Scope::Write));
        assert_eq!(store.find("oak_one").unwrap().0, KeyTag::of("ci"));
        assert_ne!(KeyTag::of("ci"), KeyTag::of("shop"));
        assert!(store.find("oak_three").is_none());
        assert!(store.find("").is_none());
        assert!(KeyStore::new(Vec::new()).find("oak_one").is_none());
        assert_eq!(store.ids().collect::<Vec<_>>(), ["ci", "shop"]);
    }

    #[test]
    fn every_problem_of_an_entry_is_reported_without_echoing_the_hash_field() {
        let problems = raw("bad id", "oak_pasted-the-key", &["orders:admin"])
            .validate()
            .unwrap_err();
        let fields: Vec<_> = problems.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["id", "sha256", "scopes"]);
        assert!(problems.iter().all(|(_, m)| !m.contains("oak_pasted")));
        let empty = RawKey::default().validate().unwrap_err();
        assert_eq!(empty.len(), 3, "{empty:?}");
        assert!(
            raw("k", &"a".repeat(63), &["orders:read"])
                .validate()
                .is_err()
        );
    }
}
