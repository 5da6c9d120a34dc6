//! OTLP protobuf, written straight from the recorded spans: an `ExportTraceServiceRequest`
//! with one resource and one scope, in a buffer the exporter reuses. Only the fields this
//! service sets are written; field numbers are those of `opentelemetry/proto/trace/v1` and
//! `common/v1`.
//!
//! A nested message is written in place behind a one-byte length that grows when the message
//! turns out longer than 127 bytes, so nothing is encoded twice and nothing is allocated per
//! span.

use std::io::Write as _;

use super::{Detail, SpanRecord};

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `Span.SpanKind`.
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;
/// `SpanFlags`: the low byte is the W3C trace flags (sampled), bit 8 says whether bit 9
/// (parent is remote) is known.
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// `v` as a protobuf varint (at most 10 bytes), on the stack: the bytes and how many.
fn varint_bytes(mut v: u64) -> ([u8; 10], usize) {
    let (mut out, mut n) = ([0u8; 10], 0);
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    (out, n + 1)
}

fn varint(buf: &mut Vec<u8>, v: u64) {
    // Every field key and most lengths here are below 128: one byte.
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    let (bytes, n) = varint_bytes(v);
    buf.extend_from_slice(&bytes[..n]);
}

fn key(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

fn bytes(buf: &mut Vec<u8>, field: u32, value: &[u8]) {
    key(buf, field, LEN);
    varint(buf, value.len() as u64);
    buf.extend_from_slice(value);
}

fn uint(buf: &mut Vec<u8>, field: u32, value: u64) {
    key(buf, field, VARINT);
    varint(buf, value);
}

/// A length-delimited field whose body `body` writes into the same buffer.
fn nested(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
    } else {
        // Widen the one-byte placeholder to the length's varint (no allocation).
        let (prefix, n) = varint_bytes(len as u64);
        buf.splice(at..=at, prefix[..n].iter().copied());
    }
}

/// An attribute value, as `AnyValue` knows it.
pub(super) enum Value<'a> {
    Str(&'a str),
    Int(i64),
    /// An address, written as text (an IPv4 one without `core::fmt`: one on every span).
    Ip(std::net::IpAddr),
    Display(&'a dyn std::fmt::Display),
}

/// `KeyValue { key = 1, value = 2 }` as field `field` of the enclosing message.
pub(super) fn attribute(buf: &mut Vec<u8>, field: u32, name: &str, value: &Value<'_>) {
    nested(buf, field, |kv| {
        bytes(kv, 1, name.as_bytes());
        nested(kv, 2, |any| match value {
            Value::Str(s) => bytes(any, 1, s.as_bytes()),
            // int64 is written as its two's complement varint.
            Value::Int(i) => uint(any, 3, *i as u64),
            Value::Ip(std::net::IpAddr::V4(ip)) => nested(any, 1, |s| {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        s.push(b'.');
                    }
                    s.extend_from_slice(digits.format(octet).as_bytes());
                }
            }),
            Value::Ip(ip) => nested(any, 1, |s| {
                let _ = write!(s, "{ip}");
            }),
            Value::Display(d) => nested(any, 1, |s| {
                let _ = write!(s, "{d}");
            }),
        });
    });
}

/// `Resource { attributes = 1 }`, written once per exporter.
pub(super) fn resource(attributes: &[(String, String)]) -> Vec<u8> {
    let mut buf = Vec::new();
    nested(&mut buf, 1, |r| {
        for (k, v) in attributes {
            attribute(r, 1, k, &Value::Str(v));
        }
    });
    buf
}

/// `InstrumentationScope { name = 1, version = 2 }` as `ScopeSpans.scope`.
pub(super) fn scope(name: &str, version: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    nested(&mut buf, 1, |s| {
        bytes(s, 1, name.as_bytes());
        bytes(s, 2, version.as_bytes());
    });
    buf
}

/// One request body: `resource` and `scope` as made by [`resource`] and [`scope`], then the
/// spans.
pub(super) fn request(buf: &mut Vec<u8>, resource: &[u8], scope: &[u8], spans: &[SpanRecord]) {
    buf.clear();
    nested(buf, 1, |rs| {
        rs.extend_from_slice(resource);
        nested(rs, 2, |ss| {
            ss.extend_from_slice(scope);
            for s in spans {
                nested(ss, 2, |b| span(b, s));
            }
        });
    });
}

fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn span(b: &mut Vec<u8>, s: &SpanRecord) {
    bytes(b, 1, &s.trace_id.0);
    bytes(b, 2, &s.span_id.0);
    if let Some(state) = &s.trace_state {
        bytes(b, 3, state.as_bytes());
    }
    if let Some(parent) = &s.parent {
        bytes(b, 4, &parent.0);
    }
    let (first, second) = match &s.detail {
        Detail::Server(d) => (d.method, d.texts.route()),
        Detail::Client(d) => (d.operation, d.collection),
    };
    nested(b, 5, |name| {
        name.extend_from_slice(first.as_bytes());
        name.push(b' ');
        name.extend_from_slice(second.as_bytes());
    });
    let kind = match s.detail {
        Detail::Server(_) => KIND_SERVER,
        Detail::Client(_) => KIND_CLIENT,
    };
    uint(b, 6, kind);
    key(b, 7, FIXED64);
    b.extend_from_slice(&unix_nanos(s.start).to_le_bytes());
    key(b, 8, FIXED64);
    b.extend_from_slice(&unix_nanos(s.end).to_le_bytes());
    let error = match &s.detail {
        Detail::Server(d) => {
            attribute(b, 9, "http.request.method", &Value::Str(d.method));
            attribute(b, 9, "http.route", &Value::Str(d.texts.route()));
            attribute(b, 9, "url.path", &Value::Str(d.texts.path()));
            attribute(b, 9, "url.scheme", &Value::Str("http"));
            let host = d.texts.host();
            if !host.is_empty() {
                attribute(b, 9, "server.address", &Value::Str(host));
            }
            if let Some(ip) = d.client {
                attribute(b, 9, "client.address", &Value::Ip(ip));
            }
            let user_agent = d.texts.user_agent();
            if !user_agent.is_empty() {
                attribute(b, 9, "user_agent.original", &Value::Str(user_agent));
            }
            attribute(
                b,
                9,
                "http.response.status_code",
                &Value::Int(i64::from(d.status)),
            );
            (d.status >= 500).then_some(ErrorType::Status(d.status))
        }
        Detail::Client(d) => {
            attribute(b, 9, "db.system.name", &Value::Str(d.system));
            attribute(b, 9, "db.operation.name", &Value::Str(d.operation));
            attribute(b, 9, "db.collection.name", &Value::Str(d.collection));
            d.error.map(ErrorType::Kind)
        }
    };
    if let Some(error) = error {
        attribute(b, 9, "error.type", &Value::Display(&error));
        // Status { message = 2, code = 3 }
        nested(b, 15, |st| {
            nested(st, 2, |m| {
                let _ = write!(m, "{error}");
            });
            uint(st, 3, STATUS_ERROR);
        });
    }
    let remote = if s.remote_parent { FLAG_IS_REMOTE } else { 0 };
    key(b, 16, FIXED32);
    b.extend_from_slice(&(FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | remote).to_le_bytes());
}

/// What `error.type` and the error status say: the HTTP status of a 5xx, or the store's
/// error kind.
enum ErrorType {
    Status(u16),
    Kind(&'static str),
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "{s}"),
            Self::Kind(k) => f.write_str(k),
        }
    }
}
