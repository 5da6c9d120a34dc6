//! Orders v1 behaviour on both backends: create, read, list, status changes, persistence.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::helpers::{Backend, TestApp, both_backends, order_body, problem};

both_backends!(
    create_then_get_round_trips,
    list_filters_and_reports_total,
    pagination_over_250_orders_has_no_gaps_or_repeats,
    every_status_transition_is_enforced,
    concurrent_patches_have_exactly_one_winner_per_transition,
    orders_survive_a_restart,
    totals_are_counted_up_to_a_cap,
);

async fn create_then_get_round_trips(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.post_json("/api/v1/orders", &order_body("cust-1")).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/orders/{id}"));
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_eq!(created["customer_id"], "cust-1");
    assert_eq!(created["currency"], "EUR");
    assert_eq!(created["total"], "20.03");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["version"], 1);
    assert_eq!(
        created["items"][1],
        json!({"sku": "SKU-2", "quantity": 1, "unit_price": "0.05"})
    );
    let created_at = created["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'));
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
    assert_eq!(created["updated_at"], created["created_at"]);

    let fetched = app.get(&location).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.json::<Value>().await.unwrap(), created);

    // Zero-decimal and three-decimal currencies keep their exact digits.
    let jpy = app
        .create_order(&json!({"customer_id": "c", "currency": "JPY",
            "items": [{"sku": "X", "quantity": 3, "unit_price": "1200"}]}))
        .await;
    assert_eq!(jpy["total"], "3600");
    let bhd = app
        .create_order(&json!({"customer_id": "c", "currency": "BHD",
            "items": [{"sku": "X", "quantity": 2, "unit_price": "0.125"}]}))
        .await;
    assert_eq!(bhd["total"], "0.250");

    let missing = app
        .get(&format!("/api/v1/orders/{}", uuid::Uuid::now_v7()))
        .await;
    problem(missing, 404).await;
    problem(app.get("/api/v1/orders/not-a-uuid").await, 404).await;
}

async fn list_filters_and_reports_total(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a1 = app.create_order(&order_body("alice")).await;
    let _a2 = app.create_order(&order_body("alice")).await;
    let b1 = app.create_order(&order_body("bob")).await;
    app.set_status(a1["id"].as_str().unwrap(), "paid").await;

    let all: Value = app.get("/api/v1/orders").await.json().await.unwrap();
    assert_eq!(all["total"], 3);
    assert_eq!(all["limit"], 20);
    assert_eq!(all["offset"], 0);
    assert_eq!(all["items"][0]["id"], b1["id"], "newest first");

    let alice: Value = app
        .get("/api/v1/orders?customer_id=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(alice["total"], 2);
    assert!(
        alice["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["customer_id"] == "alice")
    );

    let paid: Value = app
        .get("/api/v1/orders?status=paid")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paid["total"], 1);
    assert_eq!(paid["items"][0]["id"], a1["id"]);

    let both: Value = app
        .get("/api/v1/orders?status=pending&customer_id=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(both["total"], 1);

    let beyond: Value = app
        .get("/api/v1/orders?offset=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(beyond["items"], json!([]));
    assert_eq!(beyond["total"], 3);
}

async fn pagination_over_250_orders_has_no_gaps_or_repeats(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut created = HashSet::new();
    for chunk in 0..10 {
        let bodies: Vec<Value> = (0..25)
            .map(|i| order_body(&format!("c{chunk}-{i}")))
            .collect();
        let batch = bodies.iter().map(|b| app.create_order(b));
        for order in join_all(batch).await {
            created.insert(order["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(created.len(), 250);

    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page: Value = app
            .get(&format!("/api/v1/orders?limit=7&offset={offset}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(page["total"], 250);
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        seen.extend(items.iter().cloned());
        offset += 7;
    }
    let ids: Vec<&str> = seen.iter().map(|o| o["id"].as_str().unwrap()).collect();
    let unique: HashSet<String> = ids.iter().map(std::string::ToString::to_string).collect();
    assert_eq!(ids.len(), 250, "repeats or gaps");
    assert_eq!(unique, created);
    // Newest first, ties broken by id: the sequence is strictly descending on (created_at, id).
    for pair in seen.windows(2) {
        let key = |o: &Value| {
            (
                o["created_at"].as_str().unwrap().to_string(),
                o["id"].as_str().unwrap().to_string(),
            )
        };
        assert!(key(&pair[0]) > key(&pair[1]), "not strictly newest first");
    }
}

/// Drives a new order to `status` along legal transitions and returns its id.
async fn order_in(app: &TestApp, status: &str) -> String {
    let id = app.create_order(&order_body("t")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path: &[&str] = match status {
        "pending" => &[],
        "paid" => &["paid"],
        "shipped" => &["paid", "shipped"],
        "delivered" => &["paid", "shipped", "delivered"],
        "cancelled" => &["cancelled"],
        other => panic!("unknown status {other}"),
    };
    for step in path {
        app.set_status(&id, step).await;
    }
    id
}

async fn every_status_transition_is_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let statuses = ["pending", "paid", "shipped", "delivered", "cancelled"];
    let legal = [
        ("pending", "paid"),
        ("paid", "shipped"),
        ("shipped", "delivered"),
        ("pending", "cancelled"),
        ("paid", "cancelled"),
    ];
    for from in statuses {
        for to in statuses {
            let id = order_in(&app, from).await;
            let before: Value = app
                .get(&format!("/api/v1/orders/{id}"))
                .await
                .json()
                .await
                .unwrap();
            let res = app
                .patch_json(&format!("/api/v1/orders/{id}"), &json!({ "status": to }))
                .await;
            if legal.contains(&(from, to)) {
                assert_eq!(res.status(), 200, "{from} -> {to}");
                let after: Value = res.json().await.unwrap();
                assert_eq!(after["status"], to);
                assert_eq!(after["version"], before["version"].as_i64().unwrap() + 1);
                assert!(after["updated_at"].as_str() >= before["updated_at"].as_str());
            } else {
                let body = problem(res, 409).await;
                assert_eq!(body["current_status"], from, "{from} -> {to}");
                assert!(body["detail"].as_str().unwrap().contains(from));
                let unchanged: Value = app
                    .get(&format!("/api/v1/orders/{id}"))
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(unchanged, before, "a refused transition changed the order");
            }
        }
    }
}

async fn concurrent_patches_have_exactly_one_winner_per_transition(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_order(&order_body("race")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (step, status) in ["paid", "shipped", "delivered"].into_iter().enumerate() {
        let path = format!("/api/v1/orders/{id}");
        let body = json!({ "status": status });
        let attempts = (0..20).map(|_| app.patch_json(&path, &body));
        let results = join_all(attempts).await;
        let mut ok = 0;
        let mut conflicts = 0;
        for res in results {
            match res.status().as_u16() {
                200 => ok += 1,
                409 => {
                    let body: Value = res.json().await.unwrap();
                    assert_eq!(body["current_status"], status);
                    conflicts += 1;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!((ok, conflicts), (1, 19), "transition to {status}");
        let order: Value = app
            .get(&format!("/api/v1/orders/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(order["status"], status);
        assert_eq!(order["version"], step as i64 + 2);
    }
}

async fn orders_survive_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.create_order(&order_body("durable")).await;
    let id = created["id"].as_str().unwrap().to_string();
    app.set_status(&id, "paid").await;
    let backend = app.stop().await;

    let again = TestApp::spawn(backend).await;
    let res = again.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(res.status(), 200);
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["status"], "paid");
    assert_eq!(order["items"], created["items"]);
}

/// A listing's total is counted up to a cap (v1 asks for one more than any page can reach), so
/// that a count never scans a whole large table: past the cap it says "this many or more".
async fn totals_are_counted_up_to_a_cap(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        app.create_order(&order_body(&format!("capped-{i}"))).await;
    }
    let settings = crate::support::helpers::test_settings(&app.backend.url());
    let store = orders_api::store::Store::open(&settings.database).unwrap();
    let filter = orders_api::orders::ListFilter::default();
    let page = store.list(&filter, 2, 0, 3).await.unwrap();
    assert_eq!((page.items.len(), page.total), (2, 3));
    let page = store.list(&filter, 2, 4, 100).await.unwrap();
    assert_eq!((page.items.len(), page.total), (1, 5));
    store.close().await;
    // Over HTTP the cap is far away: the total is exact.
    let listing: Value = app
        .get("/api/v1/orders?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listing["total"], 5);
}
