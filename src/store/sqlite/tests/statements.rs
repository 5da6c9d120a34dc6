//! What SQLite makes of the store's statements: their plans, their parameters, and whether a
//! cached one is prepared again.

use super::super::*;
use super::settings;

/// A database migrated by an earlier build gets the rebuilt orders table: every order, index and
/// the status rule are kept, and neither an INSERT nor a status UPDATE builds a temporary
/// B-tree any more (what `status IN (...)` made SQLite do for each row).
#[test]
fn the_status_rule_rebuild_keeps_every_order_and_drops_the_temporary_btree() {
    const REBUILD: i64 = 20261204000001;
    const INSERT: &str = "INSERT INTO orders (id, customer_id, currency, items, total_minor, \
                          status, created_at, updated_at, version) \
                          VALUES (?1, 'c', 'EUR', '[]', 100, ?2, 't', 't', 1)";
    let temp_btree = |conn: &Connection, sql: &str, n: usize| -> bool {
        let mut s = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let params = rusqlite::params_from_iter((0..n).map(|i| i.to_string()));
        let ops: Vec<String> = s
            .query_map(params, |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        ops.iter().any(|op| op == "OpenEphemeral")
    };
    let update = "UPDATE orders SET status = ?1 WHERE id = ?2";
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("o.db")).unwrap();
    migrate::run_below(&conn, REBUILD).unwrap();
    assert!(!migrate::applied(&conn).unwrap().contains(&REBUILD));
    assert!(temp_btree(&conn, INSERT, 2), "the old rule builds one");
    assert!(temp_btree(&conn, update, 2));
    for (id, status) in [("a", "pending"), ("b", "paid"), ("c", "cancelled")] {
        conn.execute(INSERT, [id, status]).unwrap();
    }
    conn.execute(
        "UPDATE orders SET version = 7, items = '[1]' WHERE id = 'b'",
        [],
    )
    .unwrap();
    // Every column of every row, as SQLite holds it.
    let everything = |conn: &Connection| -> Vec<Vec<rusqlite::types::Value>> {
        let mut s = conn.prepare("SELECT * FROM orders ORDER BY id").unwrap();
        let columns = s.column_count();
        s.query_map([], |r| (0..columns).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = everything(&conn);
    assert_eq!((before.len(), before[0].len()), (3, 9));

    migrate::run(&conn).unwrap();
    assert!(migrate::applied(&conn).unwrap().contains(&REBUILD));
    assert_eq!(everything(&conn), before);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        indexes,
        [
            "orders_created_idx",
            "orders_customer_created_idx",
            "orders_status_created_idx",
            "sqlite_autoindex_orders_1",
        ]
    );
    assert!(!temp_btree(&conn, INSERT, 2));
    assert!(!temp_btree(&conn, update, 2));
    // The rule still holds, for inserts and updates alike.
    let refused = conn.execute(INSERT, ["d", "lost"]).unwrap_err();
    assert!(
        refused.to_string().contains("CHECK constraint failed"),
        "{refused}"
    );
    assert!(conn.execute(update, ["lost", "a"]).is_err());
    conn.execute(update, ["shipped", "a"]).unwrap();
    conn.execute(INSERT, ["d", "delivered"]).unwrap();
}

/// Every shared statement binds `$n` to the n-th parameter on SQLite, as on PostgreSQL.
#[test]
fn shared_statements_number_their_parameters_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("o.db")).unwrap();
    migrate::run(&conn).unwrap();
    let filter = ListFilter {
        status: Some(OrderStatus::Paid),
        customer_id: crate::orders::CustomerId::parse("c").ok(),
        created_from: Some(Utc::now()),
        created_to: Some(Utc::now()),
    };
    let after = Some(Position {
        created_at: Utc::now(),
        id: Uuid::now_v7(),
    });
    let built = [
        sql::list(&filter, after, 10, None).sql,
        sql::list(&filter, None, 10, Some(5)).sql,
        sql::count(&filter, 100).sql,
        sql::purge_keys("rowid"),
    ];
    let fixed = [
        sql::GET_ORDER,
        sql::UPDATE_STATUS,
        sql::TAKE_KEY,
        sql::EXISTING_KEY,
        sql::COMPLETE_KEY,
        sql::RELEASE_KEY,
    ];
    for text in fixed
        .iter()
        .copied()
        .chain(built.iter().map(String::as_str))
    {
        let stmt = conn.prepare(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let n = stmt.parameter_count();
        assert!(n > 0, "{text}");
        for i in 1..=n {
            assert_eq!(
                stmt.parameter_name(i),
                Some(format!("${i}").as_str()),
                "{text}"
            );
        }
    }
}

/// A cached list statement is planned once: binding another `LIMIT` (every page does) does not
/// make SQLite parse and plan it again.
#[tokio::test]
async fn a_cached_list_statement_is_not_prepared_again_for_each_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(dir.path(), &[])).unwrap();
    store.migrate().await.unwrap();
    let filter = ListFilter::default();
    let after = Position {
        created_at: Utc::now(),
        id: Uuid::nil(),
    };
    // A v2 first page, a v2 later page, a v1 page: each with three page sizes in turn.
    let shapes: [&dyn Fn(i64) -> sql::Query; 3] = [
        &|limit| sql::list(&filter, None, limit, None),
        &|limit| sql::list(&filter, Some(after), limit, None),
        &|limit| sql::list(&filter, None, limit, Some(limit * 2)),
    ];
    for shape in shapes {
        let reprepared = store
            .read(|c| {
                for limit in [5, 21, 101, 5] {
                    rows(c, &shape(limit))?;
                }
                let stmt = c.prepare_cached(&shape(1).sql).map_err(from_sqlite)?;
                Ok(stmt.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .unwrap();
        assert_eq!(reprepared, 0, "{}", shape(1).sql);
    }
    store.close().await;
}

/// Every listing, whatever its filters, walks an index in the listing's order: no page sorts
/// the matching rows first (a keyset page costs its size, not the table's), and no count reads
/// the table's rows. The store's own connection plans them, with its settings.
#[tokio::test]
async fn every_listing_walks_an_index_in_order() {
    use crate::orders::{CustomerId, OrderStatus};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(dir.path(), &[])).unwrap();
    store.migrate().await.unwrap();
    let now = Utc::now();
    let after = Position {
        created_at: now,
        id: Uuid::nil(),
    };
    let mut checked = 0;
    for set in 0..16u8 {
        let filter = ListFilter {
            status: (set & 1 != 0).then_some(OrderStatus::Paid),
            customer_id: (set & 2 != 0).then(|| CustomerId::parse("c-1").unwrap()),
            created_from: (set & 4 != 0).then_some(now),
            created_to: (set & 8 != 0).then_some(now),
        };
        let queries = [
            sql::list(&filter, None, 20, None),
            sql::list(&filter, Some(after), 20, None),
            sql::list(&filter, None, 20, Some(40)),
            sql::count(&filter, 10_000),
        ];
        for q in queries {
            let plan = store
                .read(|c| {
                    let mut s = c
                        .prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql))
                        .map_err(from_sqlite)?;
                    let steps = s
                        .query_map(params(&q), |r| r.get::<_, String>(3))
                        .map_err(from_sqlite)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(from_sqlite)?;
                    Ok(steps.join(" | "))
                })
                .unwrap();
            assert!(!plan.contains("TEMP B-TREE"), "{}: {plan}", q.sql);
            assert!(
                plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
                "{}: {plan}",
                q.sql
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 64);
    store.close().await;
}
