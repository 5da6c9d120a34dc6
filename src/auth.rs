//! API keys with scopes: who a request comes from, and what it may do.
//!
//! Clients send `Authorization: Bearer <key>`. The service knows keys only by their SHA-256
//! hashes ([`keys::KeyStore`]), so neither the configuration nor a leaked config dump holds a
//! usable key. A request whose key matches carries a [`Principal`] in its extensions; the
//! authorize layer (`middleware::auth`) turns the lack of one, or of a scope, into 401 or 403.
//!
//! Keys are high-entropy random strings ([`generate`]), which is why one unsalted SHA-256 is
//! enough: there is no dictionary to try against the hash.

pub mod generate;
pub mod keys;

use std::sync::Arc;

use axum::http::{HeaderMap, Method, header};

/// What a key may do with orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `orders:read`: GET and HEAD.
    Read,
    /// `orders:write`: POST, PUT, PATCH and DELETE.
    Write,
    /// `ops:admin`: the ops listener's endpoints that show or change the running service
    /// (`/config`, `/log-level`).
    Admin,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scope's name in configuration and in `WWW-Authenticate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "orders:read",
            Scope::Write => "orders:write",
            Scope::Admin => "ops:admin",
        }
    }

    /// The scope named `s`, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// The scopes `names` name, or the names that are no scope.
    pub fn parse_all<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, Vec<&'a str>> {
        let (known, unknown): (Vec<_>, Vec<_>) = names
            .into_iter()
            .map(|name| Self::parse(name).ok_or(name))
            .partition(Result::is_ok);
        if unknown.is_empty() {
            Ok(Scopes::of(&known.into_iter().flatten().collect::<Vec<_>>()))
        } else {
            Err(unknown.into_iter().filter_map(Result::err).collect())
        }
    }

    /// What an unknown scope name is told.
    pub fn unknown(name: &str) -> String {
        format!("unknown scope {name:?}; known: orders:read, orders:write, ops:admin")
    }

    /// The scope a request with `method` needs. Methods that change nothing need `orders:read`;
    /// any other method, known or not, needs `orders:write`, so a method added later is never
    /// open to read-only keys by accident.
    pub fn for_method(method: &Method) -> Self {
        if *method == Method::GET || *method == Method::HEAD {
            Scope::Read
        } else {
            Scope::Write
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

/// A set of scopes (a bit set: copied with every request at no cost).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// The set holding `scopes`.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Scope::as_str))
            .finish()
    }
}

/// The caller of an authenticated request, in the request's extensions. Never holds the key.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The configured id of the key that matched (safe to log).
    pub key_id: Arc<str>,
    /// What the key may do.
    pub scopes: Scopes,
}

/// Which configured key a request presented: a `Copy` rate-limit key, the first 8 bytes of
/// the SHA-256 of the key's id. Not its position in the configuration, which a reload (a key
/// added before it, or a reordered file) or a replica with another file would give to another
/// key, handing it this key's buckets; the id stays with the key, the secret is not in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyTag(pub u64);

impl KeyTag {
    /// The tag of the key configured with `id`.
    pub fn of(id: &str) -> Self {
        let digest = keys::hash(id);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }
}

/// The credentials a request carries in its `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No `Authorization` header, or one with another scheme (e.g. `Basic`).
    Nothing,
    /// `Bearer` with no token, several, characters a token cannot hold, or an absurd length.
    Malformed,
    /// `Bearer <token>`, syntactically valid (RFC 6750 `b64token`).
    Token(&'a str),
}

/// Longest token worth hashing; generated keys are 47 characters.
const MAX_TOKEN_LEN: usize = 512;

/// Reads the bearer token from `headers`. The scheme is case-insensitive (RFC 7235).
pub fn presented(headers: &HeaderMap) -> Presented<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Presented::Nothing;
    };
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Presented::Nothing;
    }
    let token = rest.trim_ascii();
    let body_len = token.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    let well_formed = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token[..body_len]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b));
    match std::str::from_utf8(token) {
        Ok(t) if well_formed && body_len > 0 => Presented::Token(t),
        _ => Presented::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_tokens_are_read_and_junk_is_malformed() {
        assert_eq!(presented(&HeaderMap::new()), Presented::Nothing);
        assert_eq!(presented(&with_auth("Basic dTpw")), Presented::Nothing);
        assert_eq!(
            presented(&with_auth("Bearer oak_abc-DEF_1")),
            Presented::Token("oak_abc-DEF_1")
        );
        assert_eq!(
            presented(&with_auth("bearer  a/b+c==")),
            Presented::Token("a/b+c==")
        );
        for junk in ["Bearer", "Bearer ", "Bearer a b", "Bearer ==", "Bearer a=b"] {
            assert_eq!(presented(&with_auth(junk)), Presented::Malformed, "{junk}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(presented(&with_auth(&long)), Presented::Malformed);
    }

    #[test]
    fn scopes_follow_the_method() {
        assert_eq!(Scope::for_method(&Method::GET), Scope::Read);
        assert_eq!(Scope::for_method(&Method::HEAD), Scope::Read);
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(Scope::for_method(&m), Scope::Write, "{m}");
        }
        let read = Scopes::of(&[Scope::Read]);
        assert!(read.contains(Scope::Read) && !read.contains(Scope::Write));
        assert_eq!(format!("{read:?}"), "{\"orders:read\"}");
        assert!(Scopes::default().is_empty());
        assert_eq!(Scope::parse("orders:write"), Some(Scope::Write));
        assert_eq!(Scope::parse("orders:admin"), None);
    }
}
