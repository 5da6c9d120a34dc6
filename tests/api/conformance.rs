//! Places where the server disagreed with its own OpenAPI documents, kept as regressions: what a
//! document allows, the server must accept.

use serde_json::{Value, json};

use crate::support::helpers::{Backend, TestApp, order_body, problem};
use crate::v2::v2_body;

/// JSON Schema's `integer` admits `2.0`, and JSON itself does not tell it from `2`.
#[tokio::test]
async fn whole_numbers_with_a_fraction_are_integers() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let mut v1 = order_body("whole");
    v1["items"][0]["quantity"] = json!(2.0);
    let created = app.create_order(&v1).await;
    assert_eq!(created["items"][0]["quantity"], 2);
    assert_eq!(created["total"], "20.03");

    let mut v2 = v2_body("whole");
    v2["items"][0]["quantity"] = json!(3.0);
    v2["items"][0]["unit_price"]["amount_minor"] = json!(100.0);
    let res = app.post_json("/api/v2/orders", &v2).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.expect("order");
    assert_eq!(created["items"][0]["quantity"], 3);
    assert_eq!(created["items"][0]["unit_price"]["amount_minor"], 100);

    // A fraction is still not an integer.
    v2["items"][0]["quantity"] = json!(2.5);
    let body = problem(app.post_json("/api/v2/orders", &v2).await, 422).await;
    assert_eq!(body["errors"][0]["pointer"], "/items/0/quantity");
}

/// An entity tag may contain a comma (RFC 9110 `etagc`): a list holding one is well formed, so
/// a tag that does not match is a failed precondition, not a malformed header.
#[tokio::test]
async fn if_match_tags_may_contain_commas() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let res = app.post_json("/api/v2/orders", &v2_body("commas")).await;
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.expect("order");
    let url = app.url(&format!(
        "/api/v2/orders/{}",
        order["id"].as_str().expect("id")
    ));
    let patch = |if_match: &'static str| {
        app.client
            .patch(&url)
            .header("if-match", if_match)
            .json(&json!({"status": "paid"}))
            .send()
    };
    let stale = patch("\"a,b\"").await.expect("PATCH");
    problem(stale, 412).await;
    let listed = patch("\"x,y\", \"1\"").await.expect("PATCH");
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.headers()["etag"], "\"2\"");
}
