//! Orders v2 on both backends: the wire format, cursor pages under concurrent inserts, filters,
//! and conditional requests (ETag, If-Match, If-None-Match).

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::support::helpers::{Backend, TestApp, both_backends, problem};

both_backends!(
    v2_wire_format_is_money_objects_and_etags,
    v2_create_reports_every_invalid_field,
    cursor_pages_over_250_orders_have_no_gaps_or_repeats_while_inserting,
    filters_by_status_customer_and_created_range,
    patch_requires_if_match_and_refuses_stale_versions,
    concurrent_conditional_patches_have_one_winner,
);

/// A valid v2 create body.
pub fn v2_body(customer: &str) -> Value {
    json!({
        "customer_id": customer,
        "items": [
            { "sku": "SKU-1", "quantity": 2, "unit_price": {"amount_minor": 999, "currency": "EUR"} },
            { "sku": "SKU-2", "quantity": 1, "unit_price": {"amount_minor": 5, "currency": "EUR"} }
        ]
    })
}

/// Creates a v2 order, asserting 201, and returns its body.
async fn create(app: &TestApp, body: &Value) -> Value {
    let res = app.post_json("/api/v2/orders", body).await;
    assert_eq!(res.status(), 201, "v2 create failed");
    res.json().await.expect("order json")
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

async fn v2_wire_format_is_money_objects_and_etags(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.post_json("/api/v2/orders", &v2_body("cust-1")).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let order: Value = res.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v2/orders/{id}"));
    assert_eq!(
        keys(&order),
        [
            "created_at",
            "customer_id",
            "id",
            "items",
            "status",
            "total",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(
        order["total"],
        json!({"amount_minor": 2003, "currency": "EUR"})
    );
    assert_eq!(
        order["items"][0],
        json!({"sku": "SKU-1", "quantity": 2,
               "unit_price": {"amount_minor": 999, "currency": "EUR"}})
    );
    assert_eq!(order["status"], "pending");
    assert_eq!(order["version"], 1);

    let fetched = app.get(&location).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["etag"], "\"1\"");
    assert_eq!(fetched.json::<Value>().await.unwrap(), order);

    // The same order through v1 keeps the v1 wire: decimal strings.
    let v1: Value = app
        .get(&format!("/api/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1["total"], "20.03");
    assert_eq!(v1["currency"], "EUR");

    let not_modified = app
        .client
        .get(app.url(&location))
        .header("if-none-match", "W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], "\"1\"");

    problem(app.get("/api/v2/orders/not-a-uuid").await, 404).await;
}

async fn v2_create_reports_every_invalid_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({
        "customer_id": "bad id",
        "currency": "EUR",
        "items": [
            {"sku": "A", "quantity": 1, "unit_price": {"amount_minor": 5, "currency": "EUR"}},
            {"sku": "B", "quantity": 0, "unit_price": {"amount_minor": -1, "currency": "USD"}},
            {"sku": "C", "quantity": 1, "unit_price": "5.00"},
            {"sku": "D", "quantity": 1, "unit_price": {"amount_minor": 1, "currency": "XXX", "x": 1}}
        ]
    });
    let p = problem(app.post_json("/api/v2/orders", &body).await, 422).await;
    let mut pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        [
            "/currency",
            "/customer_id",
            "/items/1/quantity",
            "/items/1/unit_price/amount_minor",
            "/items/1/unit_price/currency",
            "/items/2/unit_price",
            "/items/3/unit_price/currency",
            "/items/3/unit_price/x",
        ]
    );
    // Nothing was stored.
    let page: Value = app.get("/api/v2/orders").await.json().await.unwrap();
    assert_eq!(page["data"], json!([]));
}

async fn cursor_pages_over_250_orders_have_no_gaps_or_repeats_while_inserting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut created = HashSet::new();
    for chunk in 0..10 {
        let bodies: Vec<Value> = (0..25).map(|i| v2_body(&format!("c{chunk}-{i}"))).collect();
        for order in join_all(bodies.iter().map(|b| create(&app, b))).await {
            created.insert(order["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(created.len(), 250);

    // Another client keeps inserting while the pages are read.
    let writer = {
        let (client, url) = (app.client.clone(), app.url("/api/v2/orders"));
        tokio::spawn(async move {
            let mut ids = HashSet::new();
            for i in 0..60 {
                let res = client
                    .post(&url)
                    .json(&v2_body(&format!("late-{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
                let order: Value = res.json().await.unwrap();
                ids.insert(order["id"].as_str().unwrap().to_string());
            }
            ids
        })
    };
    let mut seen: Vec<Value> = Vec::new();
    let mut next = Some("/api/v2/orders?limit=7".to_string());
    let mut pages = 0;
    let mut inserted_between = HashSet::new();
    while let Some(url) = next {
        let page: Value = app.get(&url).await.json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 7);
        seen.extend(data.iter().cloned());
        assert_eq!(
            page["next_cursor"].is_null(),
            page["links"]["next"].is_null()
        );
        next = page["links"]["next"].as_str().map(str::to_string);
        pages += 1;
        assert!(pages < 100, "pagination does not end");
        // An insert between two pages, for certain: newer than every page read so far.
        let between = create(&app, &v2_body("between")).await;
        inserted_between.insert(between["id"].as_str().unwrap().to_string());
    }
    let late = writer.await.unwrap();

    let ids: Vec<String> = seen
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "an order was repeated");
    assert!(created.is_subset(&unique), "an order was skipped");
    assert!(pages >= 36, "250 orders need 36 pages of 7");
    // Whatever else was seen was inserted meanwhile; orders inserted after the first page are
    // newer than the cursor and never shift a later page.
    assert!(unique.difference(&created).all(|id| late.contains(id)));
    assert!(unique.is_disjoint(&inserted_between));
    for pair in seen.windows(2) {
        let key = |o: &Value| {
            (
                o["created_at"].as_str().unwrap().to_string(),
                o["id"].as_str().unwrap().to_string(),
            )
        };
        assert!(key(&pair[0]) > key(&pair[1]), "not strictly newest first");
    }

    let bad = app.get("/api/v2/orders?cursor=not-a-cursor").await;
    let p = problem(bad, 422).await;
    assert_eq!(p["errors"][0]["parameter"], "cursor");
}

async fn filters_by_status_customer_and_created_range(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut made = Vec::new();
    for customer in ["alice", "bob", "alice", "carol"] {
        made.push(create(&app, &v2_body(customer)).await);
    }
    let id = |i: usize| made[i]["id"].as_str().unwrap().to_string();
    let res = app
        .client
        .patch(app.url(&format!("/api/v2/orders/{}", id(2))))
        .header("if-match", "\"1\"")
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let ids_of = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect()
    };
    let get = |q: String| {
        let app = &app;
        async move {
            let res = app.get(&format!("/api/v2/orders?{q}")).await;
            assert_eq!(res.status(), 200, "{q}");
            res.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        ids_of(&get("customer_id=alice".into()).await),
        [id(2), id(0)]
    );
    assert_eq!(ids_of(&get("status=paid".into()).await), [id(2)]);
    assert_eq!(
        ids_of(&get("status=pending&customer_id=alice".into()).await),
        [id(0)]
    );
    // created_from is inclusive, created_to exclusive.
    let at = |i: usize| made[i]["created_at"].as_str().unwrap().to_string();
    let range = get(format!("created_from={}&created_to={}", at(1), at(3))).await;
    assert_eq!(ids_of(&range), [id(2), id(1)]);
    // Links repeat the filters.
    let paged = get(format!("limit=1&customer_id=alice&created_from={}", at(0))).await;
    let next = paged["links"]["next"].as_str().unwrap();
    assert!(next.contains("customer_id=alice") && next.contains("limit=1"));
    let second: Value = app.get(next).await.json().await.unwrap();
    assert_eq!(ids_of(&second), [id(0)]);
    assert!(second["next_cursor"].is_null());

    let bad = app
        .get("/api/v2/orders?created_from=yesterday&limit=0&status=lost")
        .await;
    let p = problem(bad, 422).await;
    assert_eq!(p["errors"].as_array().unwrap().len(), 3);
}

async fn patch_requires_if_match_and_refuses_stale_versions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = create(&app, &v2_body("p")).await;
    let url = app.url(&format!("/api/v2/orders/{}", order["id"].as_str().unwrap()));
    let patch = |if_match: Option<&'static str>, status: &'static str| {
        let mut req = app.client.patch(&url).json(&json!({ "status": status }));
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        req.send()
    };

    let p = problem(patch(None, "paid").await.unwrap(), 428).await;
    assert_eq!(p["type"], "urn:orders-api:problem:precondition-required");
    let stale = patch(Some("\"7\""), "paid").await.unwrap();
    assert_eq!(
        stale.headers()["etag"],
        "\"1\"",
        "412 names the current ETag"
    );
    problem(stale, 412).await;
    // Strong comparison: a weak tag never matches, and the tags are compared byte for byte
    // (RFC 9110 8.8.3.2): "01" and "+1" are other tags than "1".
    problem(patch(Some("W/\"1\""), "paid").await.unwrap(), 412).await;
    for other in ["\"01\"", "\"+1\"", "\" 1\"", "\"1.0\""] {
        problem(patch(Some(other), "paid").await.unwrap(), 412).await;
    }
    problem(patch(Some("1"), "paid").await.unwrap(), 400).await;

    let ok = patch(Some("\"0\", \"1\""), "paid").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["etag"], "\"2\"");
    let body: Value = ok.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["version"].as_i64()),
        (Some("paid"), Some(2))
    );

    // The old tag is stale now; `*` applies to whatever is current.
    problem(patch(Some("\"1\""), "shipped").await.unwrap(), 412).await;
    let any = patch(Some("*"), "shipped").await.unwrap();
    assert_eq!(any.status(), 200);
    assert_eq!(any.headers()["etag"], "\"3\"");
    // A precondition that holds does not make an illegal transition legal.
    let p = problem(patch(Some("\"3\""), "pending").await.unwrap(), 409).await;
    assert_eq!(p["current_status"], "shipped");
    let missing = app
        .client
        .patch(app.url(&format!("/api/v2/orders/{}", uuid::Uuid::now_v7())))
        .header("if-match", "*")
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    problem(missing, 404).await;
}

async fn concurrent_conditional_patches_have_one_winner(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = create(&app, &v2_body("race")).await;
    let url = app.url(&format!("/api/v2/orders/{}", order["id"].as_str().unwrap()));
    let attempts = (0..12).map(|i| {
        let status = if i % 2 == 0 { "paid" } else { "cancelled" };
        app.client
            .patch(&url)
            .header("if-match", "\"1\"")
            .json(&json!({ "status": status }))
            .send()
    });
    let mut statuses: Vec<u16> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses[0], 200);
    assert!(statuses[1..].iter().all(|s| *s == 412), "{statuses:?}");
    let now: Value = app
        .get(&format!("/api/v2/orders/{}", order["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["version"], 2);
}
