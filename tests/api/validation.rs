//! Every validation rule of the v1 create and update bodies and the list query, each answered
//! by a 422 that names the field; several problems are all reported at once.

use serde_json::{Value, json};

use crate::support::helpers::{Backend, TestApp, order_body, problem};

/// `order_body` with the member at `pointer` replaced by `value` (or removed for `None`).
fn with(pointer: &str, value: Option<Value>) -> Value {
    let mut body = order_body("c");
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = body.pointer_mut(parent).unwrap();
    match (target, value) {
        (Value::Object(obj), Some(v)) => {
            obj.insert(key.to_string(), v);
        }
        (Value::Object(obj), None) => {
            obj.remove(key);
        }
        (Value::Array(items), Some(v)) => items[key.parse::<usize>().unwrap()] = v,
        _ => panic!("bad pointer {pointer}"),
    }
    body
}

fn pointers(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn each_invalid_field_is_named() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("/customer_id", None),
        ("/customer_id", Some(json!(""))),
        ("/customer_id", Some(json!("x".repeat(65)))),
        ("/customer_id", Some(json!("has space"))),
        ("/customer_id", Some(json!(42))),
        ("/currency", None),
        ("/currency", Some(json!("eur"))),
        ("/currency", Some(json!("XXX"))),
        ("/currency", Some(json!("EURO"))),
        ("/items", None),
        ("/items", Some(json!([]))),
        ("/items", Some(json!("SKU-1"))),
        (
            "/items",
            Some(json!(vec![
                json!({"sku": "A", "quantity": 1, "unit_price": "1.00"});
                101
            ])),
        ),
        ("/items/0", Some(json!("not an object"))),
        ("/items/0/sku", None),
        ("/items/0/sku", Some(json!(""))),
        ("/items/0/sku", Some(json!("lower-case"))),
        ("/items/0/sku", Some(json!("A".repeat(65)))),
        ("/items/0/quantity", None),
        ("/items/0/quantity", Some(json!(0))),
        ("/items/0/quantity", Some(json!(1001))),
        ("/items/0/quantity", Some(json!(1.5))),
        ("/items/0/quantity", Some(json!("2"))),
        ("/items/0/unit_price", None),
        ("/items/0/unit_price", Some(json!(9.99))),
        ("/items/0/unit_price", Some(json!("9.9"))),
        ("/items/0/unit_price", Some(json!("9.999"))),
        ("/items/0/unit_price", Some(json!("-1.00"))),
        ("/items/0/unit_price", Some(json!("10000000000.00"))),
        ("/unexpected", Some(json!(true))),
        ("/items/0/discount", Some(json!("1.00"))),
    ];
    for (pointer, value) in cases {
        let body = with(pointer, value.clone());
        let res = app.post_json("/api/v1/orders", &body).await;
        let problem = problem(res, 422).await;
        assert_eq!(
            pointers(&problem),
            vec![pointer.to_string()],
            "{pointer} = {value:?}"
        );
        assert!(
            problem["errors"][0]["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    }
    let listed: Value = app.get("/api/v1/orders").await.json().await.unwrap();
    assert_eq!(listed["total"], 0, "an invalid order was stored");
}

#[tokio::test]
async fn all_problems_are_reported_in_one_response() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let body = json!({
        "customer_id": "",
        "currency": "EUR",
        "items": [
            { "sku": "ok", "quantity": 0, "unit_price": "1" },
            { "sku": "FINE", "quantity": 1, "unit_price": "1.00", "colour": "red" }
        ],
        "note": "x"
    });
    let problem = problem(app.post_json("/api/v1/orders", &body).await, 422).await;
    let mut got = pointers(&problem);
    got.sort();
    assert_eq!(
        got,
        [
            "/customer_id",
            "/items/0/quantity",
            "/items/0/sku",
            "/items/0/unit_price",
            "/items/1/colour",
            "/note"
        ]
    );
    assert_eq!(problem["type"], "urn:orders-api:problem:validation");
}

#[tokio::test]
async fn status_change_body_is_validated() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let id = app.create_order(&order_body("c")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/orders/{id}");
    for (body, pointer) in [
        (json!({}), "/status"),
        (json!({ "status": "refunded" }), "/status"),
        (json!({ "status": 1 }), "/status"),
        (json!({ "status": "paid", "by": "me" }), "/by"),
        (json!(["paid"]), ""),
    ] {
        let problem = problem(app.patch_json(&path, &body).await, 422).await;
        assert_eq!(pointers(&problem), vec![pointer.to_string()], "{body}");
    }
    let order: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(order["status"], "pending");
}

#[tokio::test]
async fn list_parameters_are_validated() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("status=lost", "status"),
        ("customer_id=a%20b", "customer_id"),
    ] {
        let problem = problem(app.get(&format!("/api/v1/orders?{query}")).await, 422).await;
        assert_eq!(problem["errors"][0]["parameter"], param, "{query}");
    }
    let both = problem(app.get("/api/v1/orders?limit=0&status=lost").await, 422).await;
    assert_eq!(both["errors"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.get("/api/v1/orders?limit=100&offset=0").await.status(),
        200
    );
}

/// One 64 KiB body of short unknown keys names thousands of problems: the answer lists the
/// first 50 and counts the rest, so that a small request cannot make a large response.
#[tokio::test]
async fn a_flood_of_problems_is_capped() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let mut body = serde_json::Map::new();
    let (mut n, mut size) = (0, 2);
    while size < 63 * 1024 {
        let key = format!("k{n}");
        size += key.len() + 5; // "key":0,
        body.insert(key, json!(0));
        n += 1;
    }
    let res = app.post_json("/api/v1/orders", &Value::Object(body)).await;
    let p = problem(res, 422).await;
    let listed = p["errors"].as_array().unwrap().len();
    assert_eq!(listed, 50);
    // n unknown keys, and the three required members missing.
    let total = n + 3;
    assert_eq!(p["omitted_errors"], json!(total - 50), "{}", p["detail"]);
    assert_eq!(
        p["detail"],
        format!("{total} invalid fields; the first 50 are listed in errors")
    );
    assert!(serde_json::to_vec(&p).unwrap().len() < 8 * 1024);
}
