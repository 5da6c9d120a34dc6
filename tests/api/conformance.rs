//! Places where the server disagreed with its own OpenAPI documents, kept as regressions: what a
//! document allows, the server must accept.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, order_body, problem};
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
