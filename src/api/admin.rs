//! The ops listener's endpoints that show or change the running service: `GET /config` (the
//! effective configuration, as `config print` renders it, secrets as `***`) and `GET` /
//! `PUT /log-level` (a log filter for a while). With authentication on they need an API key
//! with the `ops:admin` scope; with it off they are as open as the API.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::api::body::JsonBody;
use crate::auth::{Presented, Scope, presented};
use crate::error::{ApiError, FieldError};
use crate::middleware::Live;
use crate::reload::{Control, LogLevel};

/// What the endpoints need.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The configuration view and the log filter.
    pub control: Arc<Control>,
    /// The API keys in force (the reloadable settings).
    pub live: Arc<ArcSwap<Live>>,
    /// `auth.enabled`.
    pub auth: bool,
}

/// The routes, with their state.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/config", get(config))
        .route("/log-level", get(log_level).put(set_log_level))
        .with_state(admin)
}

/// With authentication on: a valid key with `ops:admin`, or 401 / 403.
fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), ApiError> {
    if !admin.auth {
        return Ok(());
    }
    let keys = admin.live.load().keys.clone();
    match presented(headers) {
        Presented::Nothing => Err(ApiError::Unauthenticated),
        Presented::Malformed => Err(ApiError::InvalidToken),
        Presented::Token(token) => match keys.and_then(|k| k.find(token)) {
            Some((_, p)) if p.scopes.contains(Scope::Admin) => Ok(()),
            Some(_) => Err(ApiError::InsufficientScope {
                scope: Scope::Admin.as_str(),
            }),
            None => Err(ApiError::InvalidToken),
        },
    }
}

async fn config(State(admin): State<Admin>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&admin, &headers)?;
    let Some((rendered, at)) = admin.control.config() else {
        return Err(ApiError::NotFound(
            "this process was not started from configuration files".into(),
        ));
    };
    let at = at.map_or_else(
        || "never (as started)".to_string(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    );
    let mut res = format!("# last reload: {at}\n{rendered}").into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(res)
}

async fn log_level(
    State(admin): State<Admin>,
    headers: HeaderMap,
) -> Result<Json<LogLevel>, ApiError> {
    authorize(&admin, &headers)?;
    Ok(Json(admin.control.level()))
}

/// The longest a temporary filter may stay.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

async fn set_log_level(
    State(admin): State<Admin>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Json<LogLevel>, ApiError> {
    authorize(&admin, &headers)?;
    // `{"filter": "debug,orders_api::store=trace", "ttl": "10m"}`, nothing else.
    let mut errors = Vec::new();
    let problem = |errors: &mut Vec<FieldError>, pointer: &str, detail: String| {
        errors.push(FieldError {
            pointer: Some(pointer.to_string()),
            parameter: None,
            detail,
        });
    };
    let Some(members) = body.as_object() else {
        return Err(ApiError::Validation {
            errors: vec![FieldError {
                pointer: Some(String::new()),
                parameter: None,
                detail: "expected an object with filter and ttl".into(),
            }],
            omitted: 0,
        });
    };
    for name in members.keys().filter(|k| *k != "filter" && *k != "ttl") {
        problem(&mut errors, &format!("/{name}"), "unknown member".into());
    }
    let filter = members.get("filter").and_then(|v| v.as_str());
    match filter.map(crate::telemetry::parse_log_filter) {
        None => problem(
            &mut errors,
            "/filter",
            "required: a log filter such as \"debug\"".into(),
        ),
        Some(Err(e)) => problem(&mut errors, "/filter", e),
        Some(Ok(_)) => {}
    }
    let ttl = members
        .get("ttl")
        .and_then(|v| v.as_str())
        .and_then(|s| humantime::parse_duration(s.trim()).ok())
        .filter(|t| !t.is_zero() && *t <= MAX_TTL);
    if ttl.is_none() {
        problem(
            &mut errors,
            "/ttl",
            "required: a duration such as \"10m\", above 0, at most 24h".into(),
        );
    }
    if let (Some(filter), Some(ttl), true) = (filter, ttl, errors.is_empty())
        && let Err(e) = admin.control.override_level(filter, ttl)
    {
        problem(&mut errors, "/filter", e);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation { errors, omitted: 0 });
    }
    Ok(Json(admin.control.level()))
}
