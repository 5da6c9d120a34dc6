//! Request inputs: bodies as JSON values and query strings as name-value pairs, then parsed
//! field by field so that one 422 lists every problem.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldError, MAX_LISTED_ERRORS};

/// A JSON request body: `application/json` (or any `+json` type), within the body limit.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected content-type application/json, got {:?}",
                content_type
            )));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(from_bytes_rejection)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::MalformedJson(e.to_string()))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn from_bytes_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest(r.body_text())
    }
}

/// The query string as name-value pairs, in order; an undecodable one is 400 problem+json.
#[derive(Debug)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Ok(Self(pairs))
    }
}

/// Collects every invalid field before answering: the first [`MAX_LISTED_ERRORS`] in full,
/// the rest only counted.
#[derive(Debug, Default)]
pub struct Problems {
    listed: Vec<FieldError>,
    omitted: usize,
}

impl Problems {
    fn push(&mut self, problem: impl FnOnce() -> FieldError) {
        if self.listed.len() < MAX_LISTED_ERRORS {
            self.listed.push(problem());
        } else {
            self.omitted += 1;
        }
    }

    /// Records a problem at a JSON pointer into the body.
    pub fn at(&mut self, pointer: Pointer<'_>, detail: impl Into<String>) {
        self.push(|| FieldError {
            pointer: Some(pointer.to_string()),
            parameter: None,
            detail: detail.into(),
        });
    }

    /// Records a problem with a query parameter.
    pub fn param(&mut self, name: &str, detail: impl Into<String>) {
        self.push(|| FieldError {
            pointer: None,
            parameter: Some(name.to_string()),
            detail: detail.into(),
        });
    }

    /// `value` if nothing was recorded, else a 422 listing what was found.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(v) if self.listed.is_empty() => Ok(v),
            _ => Err(ApiError::Validation {
                errors: self.listed,
                omitted: self.omitted,
            }),
        }
    }

    /// The object at `pointer`, with every key outside `allowed` reported as unknown.
    pub fn object<'v>(
        &mut self,
        value: &'v Value,
        pointer: Pointer<'_>,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(obj) = value.as_object() else {
            self.at(pointer, "must be a JSON object");
            return None;
        };
        for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.at(pointer.key(key), "unknown field");
        }
        Some(obj)
    }

    /// A required string member, parsed by `parse`.
    pub fn string<T, E: std::fmt::Display>(
        &mut self,
        obj: &Map<String, Value>,
        pointer: Pointer<'_>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let at = pointer.key(key);
        match obj.get(key) {
            None | Some(Value::Null) => self.at(at, "is required"),
            Some(Value::String(s)) => match parse(s) {
                Ok(v) => return Some(v),
                Err(e) => self.at(at, e.to_string()),
            },
            Some(_) => self.at(at, "must be a string"),
        }
        None
    }

    /// A required array member of 1 to `max` elements, each parsed by `item` at its own
    /// pointer; `None` if the array or any element is invalid (every problem is recorded).
    pub fn array<T>(
        &mut self,
        obj: &Map<String, Value>,
        pointer: Pointer<'_>,
        key: &str,
        max: usize,
        mut item: impl FnMut(&mut Self, &Value, Pointer<'_>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let at = pointer.key(key);
        match obj.get(key) {
            None | Some(Value::Null) => self.at(at, "is required"),
            Some(Value::Array(v)) if v.is_empty() || v.len() > max => {
                self.at(at, format!("must hold 1 to {max} items"));
            }
            Some(Value::Array(v)) => {
                // Every element is parsed (each reports its own problems); any invalid one
                // makes the whole array invalid.
                let (mut parsed, mut valid) = (Vec::with_capacity(v.len()), true);
                for (i, element) in v.iter().enumerate() {
                    match item(self, element, at.index(i)) {
                        Some(t) => parsed.push(t),
                        None => valid = false,
                    }
                }
                return valid.then_some(parsed);
            }
            Some(_) => self.at(at, "must be an array"),
        }
        None
    }

    /// A required integer member, parsed by `parse`.
    pub fn integer<T, E: std::fmt::Display>(
        &mut self,
        obj: &Map<String, Value>,
        pointer: Pointer<'_>,
        key: &str,
        parse: impl FnOnce(i64) -> Result<T, E>,
    ) -> Option<T> {
        let at = pointer.key(key);
        match obj.get(key) {
            None | Some(Value::Null) => self.at(at, "is required"),
            Some(Value::Number(n)) => match whole(n) {
                Some(i) => match parse(i) {
                    Ok(v) => return Some(v),
                    Err(e) => self.at(at, e.to_string()),
                },
                None => self.at(at, "must be an integer"),
            },
            Some(_) => self.at(at, "must be an integer"),
        }
        None
    }
}

/// The integer a JSON number denotes, if it is whole and fits an `i64`. JSON does not tell
/// `2` from `2.0`, and JSON Schema's `integer` admits both, so neither may the parsers.
fn whole(n: &serde_json::Number) -> Option<i64> {
    // 2^63: every f64 below it in magnitude converts exactly to an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < LIMIT)
            .map(|f| f as i64)
    })
}

/// A JSON pointer (RFC 6901) into the body, built on the stack as a parser descends and
/// written out only when a problem is recorded at it: a valid body costs no allocation.
#[derive(Debug, Clone, Copy)]
pub enum Pointer<'a> {
    /// The whole body (`""`).
    Root,
    /// A member of the object at the parent pointer.
    Key(&'a Pointer<'a>, &'a str),
    /// An element of the array at the parent pointer.
    Index(&'a Pointer<'a>, usize),
}

impl<'a> Pointer<'a> {
    /// The member `key` of the object here.
    pub fn key(&'a self, key: &'a str) -> Self {
        Self::Key(self, key)
    }

    /// The element `i` of the array here.
    pub fn index(&'a self, i: usize) -> Self {
        Self::Index(self, i)
    }
}

impl std::fmt::Display for Pointer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Root => Ok(()),
            Self::Key(parent, key) => {
                write!(f, "{parent}/")?;
                for c in key.chars() {
                    match c {
                        '~' => f.write_str("~0")?,
                        '/' => f.write_str("~1")?,
                        c => std::fmt::Write::write_char(f, c)?,
                    }
                }
                Ok(())
            }
            Self::Index(parent, i) => write!(f, "{parent}/{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }

    #[test]
    fn whole_numbers_are_integers_however_written() {
        let n = |v: Value| match v {
            Value::Number(n) => whole(&n),
            _ => None,
        };
        assert_eq!(n(serde_json::json!(2)), Some(2));
        assert_eq!(n(serde_json::json!(2.0)), Some(2));
        assert_eq!(n(serde_json::json!(-3.0)), Some(-3));
        assert_eq!(n(serde_json::json!(2.5)), None);
        assert_eq!(n(serde_json::json!(1e300)), None);
        assert_eq!(n(serde_json::json!(u64::MAX)), None);
    }

    #[test]
    fn pointers_escape() {
        let root = Pointer::Root;
        let items = root.key("items");
        let first = items.index(0);
        assert_eq!(root.to_string(), "");
        assert_eq!(first.to_string(), "/items/0");
        assert_eq!(first.key("a/b~c").to_string(), "/items/0/a~1b~0c");
    }
}
