use super::*;
use crate::config::{LoadOptions, Settings};

mod statements;

fn settings(dir: &std::path::Path, env: &[(&str, &str)]) -> DatabaseSettings {
    let mut vars = vec![
        ("APP_CONFIG_DIR".to_string(), "/nonexistent".to_string()),
        ("APP_AUTH__ENABLED".to_string(), "false".to_string()),
        (
            "APP_DATABASE__URL".to_string(),
            format!("sqlite://{}", dir.join("o.db").display()),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load(&LoadOptions {
        config_file: None,
        env: vars,
    })
    .unwrap()
    .database
}

#[tokio::test]
async fn commits_are_fsynced_unless_configured_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    // 2 is FULL, 1 NORMAL (sqlite.org/pragma.html#pragma_synchronous).
    for (env, expected) in [(None, 2), (Some("normal"), 1)] {
        let vars: Vec<_> = env
            .map(|v| ("APP_DATABASE__SQLITE_SYNCHRONOUS", v))
            .into_iter()
            .collect();
        let store = SqliteStore::open(&settings(dir.path(), &vars)).unwrap();
        let seen: i64 = store
            .writer()
            .write(|s| {
                s.conn
                    .query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(from_sqlite)
            })
            .await
            .unwrap();
        assert_eq!(seen, expected, "{env:?}");
        store.close().await;
    }
}

/// Writes queued together commit together, and each caller learns its own outcome: one failing
/// write does not undo the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_in_a_batch_undoes_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(dir.path(), &[])).unwrap();
    store.migrate().await.unwrap();
    let writes = (0..50).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .writer()
                .write(move |s| {
                    s.conn
                        .execute(
                            "INSERT INTO idempotency_keys (scope, key, fingerprint, locked_until, \
                             created_at, expires_at) VALUES ('s', ?1, 'f', 'x', 'x', 'x')",
                            // Every tenth write repeats the key before it: a primary-key clash.
                            [if i % 10 == 9 { i - 1 } else { i }],
                        )
                        .map_err(from_sqlite)
                })
                .await
        })
    });
    let mut failed = 0;
    for w in writes.collect::<Vec<_>>() {
        if w.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 5);
    let stored: i64 = store
        .read(|c| {
            c.query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| r.get(0))
                .map_err(from_sqlite)
        })
        .unwrap();
    assert_eq!(stored, 45);
    store.close().await;
}

/// A full queue is refused at once, never waited on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&settings(dir.path(), &[("APP_DATABASE__WRITE_QUEUE", "2")])).unwrap();
    // The writer is held inside a job until the test lets it go.
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .writer()
                .write(move |_| {
                    let _ = held_tx.send(());
                    let _ = go_rx.recv();
                    Ok(())
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || held_rx.recv())
        .await
        .unwrap()
        .unwrap();
    // Two more fill the queue (each polled once: queued, waiting for its answer); the next is
    // refused at once.
    let mut queued: Vec<_> = (0..2)
        .map(|_| Box::pin(store.writer().write(|_| Ok(()))))
        .collect();
    for q in &mut queued {
        assert!(futures_util::poll!(q.as_mut()).is_pending());
    }
    let refused = futures_util::FutureExt::now_or_never(store.writer().write(|_| Ok(())));
    assert!(
        matches!(refused, Some(Err(StoreError::Busy))),
        "{refused:?}"
    );
    go_tx.send(()).unwrap();
    first.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap();
    }
    store.close().await;
}

/// A read sees every write acknowledged before it began, even though read connections keep
/// their snapshot between reads; and an idle connection's snapshot never keeps the WAL from
/// being checkpointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_snapshots_see_every_acknowledged_write_and_free_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&settings(dir.path(), &[])).unwrap();
    store.migrate().await.unwrap();
    let count = |store: &SqliteStore| {
        store
            .read(|c| {
                c.query_row("SELECT COUNT(*) FROM idempotency_keys", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(from_sqlite)
            })
            .unwrap()
    };
    for i in 0..200 {
        store
            .writer()
            .write(move |s| {
                s.conn
                    .execute(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, locked_until, \
                         created_at, expires_at) VALUES ('s', ?1, 'f', 'x', 'x', 'x')",
                        [i],
                    )
                    .map_err(from_sqlite)
            })
            .await
            .unwrap();
        // Twice: the second read reuses the snapshot the first one took.
        assert_eq!(count(&store), i + 1);
        assert_eq!(count(&store), i + 1);
    }
    // A snapshot taken, then writes and no read: the idle connection must not keep it.
    assert_eq!(count(&store), 200);
    for i in 200..300 {
        store
            .writer()
            .write(move |s| {
                s.conn
                    .execute(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, locked_until, \
                         created_at, expires_at) VALUES ('s', ?1, 'f', 'x', 'x', 'x')",
                        [i],
                    )
                    .map_err(from_sqlite)
            })
            .await
            .unwrap();
    }
    // Every frame of the WAL can be checkpointed: no idle reader holds an old snapshot.
    let (busy, log, checkpointed): (i64, i64, i64) = store
        .writer()
        .alone(|s| {
            s.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(from_sqlite)
        })
        .await
        .unwrap();
    assert_eq!(busy, 0);
    assert_eq!(log, checkpointed, "an idle snapshot pinned the WAL");
    store.close().await;
}
