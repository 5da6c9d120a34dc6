//! The v1 contract, pinned: exact keys and value types of an order, a listing and a problem, and
//! the deprecation headers on every v1 response (successes, handler errors and refusals by outer
//! layers), but on nothing else.

use serde_json::{Value, json};

use crate::support::helpers::{
    Backend, TestApp, api_key, both_backends, order_body, per_client_limit, problem,
};

both_backends!(v1_bodies_keep_their_exact_shape);

/// A JSON type name, for shape comparisons.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `body`'s keys in order with their types; fails on any key more, less, or differently typed.
fn assert_shape(body: &Value, expected: &[(&str, &str)]) {
    let actual: Vec<(String, &str)> = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"))
        .iter()
        .map(|(k, v)| (k.clone(), kind(v)))
        .collect();
    let expected: Vec<(String, &str)> = expected.iter().map(|(k, t)| (k.to_string(), *t)).collect();
    assert_eq!(actual, expected, "shape of {body}");
}

const ORDER: [(&str, &str); 9] = [
    ("id", "string"),
    ("customer_id", "string"),
    ("currency", "string"),
    ("items", "array"),
    ("total", "string"),
    ("status", "string"),
    ("created_at", "string"),
    ("updated_at", "string"),
    ("version", "integer"),
];

const ITEM: [(&str, &str); 3] = [
    ("sku", "string"),
    ("quantity", "integer"),
    ("unit_price", "string"),
];

/// Every problem's members; some carry one more (`errors`, `current_status`).
const PROBLEM: [(&str, &str); 6] = [
    ("type", "string"),
    ("title", "string"),
    ("status", "integer"),
    ("detail", "string"),
    ("request_id", "string"),
    ("trace_id", "string"),
];

fn assert_order(order: &Value) {
    assert_shape(order, &ORDER);
    for item in order["items"].as_array().into_iter().flatten() {
        assert_shape(item, &ITEM);
    }
}

/// Asserts the three deprecation headers with the configured defaults.
fn assert_deprecated(res: &reqwest::Response) {
    let h = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let what = format!("{} {}", res.status(), res.url().path());
    assert_eq!(h("deprecation").as_deref(), Some("@1795392000"), "{what}");
    assert_eq!(
        h("sunset").as_deref(),
        Some("Wed, 30 Jun 2027 00:00:00 GMT"),
        "{what}"
    );
    assert_eq!(
        h("link").as_deref(),
        Some("</api/v2/orders>; rel=\"successor-version\""),
        "{what}"
    );
}

fn assert_not_deprecated(res: &reqwest::Response) {
    for name in ["deprecation", "sunset", "link"] {
        assert!(res.headers().get(name).is_none(), "{name} on {}", res.url());
    }
}

async fn v1_bodies_keep_their_exact_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.post_json("/api/v1/orders", &order_body("shape")).await;
    assert_eq!(created.status(), 201);
    assert_deprecated(&created);
    let order: Value = created.json().await.expect("order");
    assert_order(&order);

    let listed = app.get("/api/v1/orders?limit=5").await;
    assert_eq!(listed.status(), 200);
    assert_deprecated(&listed);
    let page: Value = listed.json().await.expect("listing");
    assert_shape(
        &page,
        &[
            ("items", "array"),
            ("limit", "integer"),
            ("offset", "integer"),
            ("total", "integer"),
        ],
    );
    assert_order(&page["items"][0]);

    let invalid = app
        .post_json("/api/v1/orders", &json!({"customer_id": "", "extra": 1}))
        .await;
    assert_deprecated(&invalid);
    let body = problem(invalid, 422).await;
    assert_shape(
        &body,
        &[PROBLEM.as_slice(), &[("errors", "array")]].concat(),
    );
    for error in body["errors"].as_array().into_iter().flatten() {
        assert_shape(error, &[("pointer", "string"), ("detail", "string")]);
    }

    let missing = app
        .get(&format!("/api/v1/orders/{}", uuid::Uuid::now_v7()))
        .await;
    assert_deprecated(&missing);
    let body = problem(missing, 404).await;
    assert_shape(&body, &PROBLEM);

    let id = order["id"].as_str().expect("id");
    app.set_status(id, "paid").await;
    app.set_status(id, "shipped").await;
    let conflict = app
        .patch_json(
            &format!("/api/v1/orders/{id}"),
            &json!({"status": "cancelled"}),
        )
        .await;
    assert_deprecated(&conflict);
    let body = problem(conflict, 409).await;
    assert_shape(
        &body,
        &[PROBLEM.as_slice(), &[("current_status", "string")]].concat(),
    );
    assert_eq!(body["current_status"], "shipped");

    let not_allowed = app
        .client
        .delete(app.url("/api/v1/orders"))
        .send()
        .await
        .expect("DELETE");
    assert_deprecated(&not_allowed);
    problem(not_allowed, 405).await;

    // Other routes, and paths no route matches, are not v1 resources.
    assert_not_deprecated(&app.get("/healthz").await);
    assert_not_deprecated(&app.get("/api/v1/nothing-here").await);
}

#[tokio::test]
async fn refusals_by_outer_layers_are_marked_deprecated() {
    let app = TestApp::builder(Backend::sqlite())
        .with(per_client_limit(0.01, 1))
        .spawn()
        .await;
    let first = app.get("/api/v1/orders").await;
    assert_eq!(first.status(), 200);
    let refused = app.get("/api/v1/orders").await;
    assert_deprecated(&refused);
    problem(refused, 429).await;
}

#[tokio::test]
async fn dates_come_from_the_configuration() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| {
            let at = |t| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();
            s.api.v1_deprecated_at = at("2030-01-01T00:00:00+01:00");
            s.api.v1_sunset = at("2031-02-03T04:05:06Z");
        })
        .spawn()
        .await;
    let res = app.get("/api/v1/orders").await;
    assert_eq!(res.headers()["deprecation"], "@1893452400");
    assert_eq!(res.headers()["sunset"], "Mon, 03 Feb 2031 04:05:06 GMT");
}

#[tokio::test]
async fn authentication_refusals_are_marked_deprecated_and_documents_stay_public() {
    // The SHA-256 of a key nobody holds: authentication is on, and nothing here can pass it.
    let nobody = api_key(
        "nobody",
        "6b1d3a4a1e4c1c7e5b3b2d7e0f5d0c9a8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e",
        &["orders:read"],
    );
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| {
            s.auth.enabled = true;
            s.auth.keys = vec![nobody];
        })
        .spawn()
        .await;
    let refused = app.get("/api/v1/orders").await;
    assert_deprecated(&refused);
    assert!(refused.headers().contains_key("www-authenticate"));
    problem(refused, 401).await;
    for document in ["/api/v1/openapi.json", "/api/v2/openapi.json"] {
        assert_eq!(app.get(document).await.status(), 200, "{document}");
    }
}
