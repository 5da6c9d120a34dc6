//! Idempotency records in SQLite: reads on the calling thread, writes through the writer, so
//! that a keyed create's order and the completion of its key commit together.

use std::sync::Arc;

use rusqlite::OptionalExtension;

use super::{SqliteStore, from_sqlite, insert};
use crate::idempotency::{Hold, Render, StoredResponse};
use crate::orders::Order;
use crate::orders::timestamp;
use crate::store::idempotency::{ExistingRecord, encode_headers};
use crate::store::{StoreError, sql};

impl SqliteStore {
    /// Takes the key for `hold` (see [`sql::TAKE_KEY`]); `false` when it is held or completed.
    pub(in crate::store) async fn take(&self, hold: &Hold) -> Result<bool, StoreError> {
        let hold = hold.clone();
        self.writer()
            .write(move |s| {
                let taken = s
                    .conn
                    .prepare_cached(sql::TAKE_KEY)
                    .and_then(|mut st| {
                        st.execute(rusqlite::params![
                            hold.scope,
                            hold.key.as_str(),
                            hold.fingerprint,
                            timestamp::format(hold.locked_until),
                            timestamp::format(hold.created_at),
                            timestamp::format(hold.expires_at),
                        ])
                    })
                    .map_err(from_sqlite)?;
                Ok(taken == 1)
            })
            .await
    }

    /// The record of the hold's scope and key, if there is one.
    pub(in crate::store) async fn existing(
        &self,
        hold: &Hold,
    ) -> Result<Option<ExistingRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(sql::EXISTING_KEY)
                .and_then(|mut s| {
                    s.query_row(rusqlite::params![hold.scope, hold.key.as_str()], |r| {
                        Ok(ExistingRecord {
                            fingerprint: r.get(0)?,
                            status: r.get(1)?,
                            headers: r.get(2)?,
                            body: r.get(3)?,
                        })
                    })
                    .optional()
                })
                .map_err(from_sqlite)
        })
    }

    pub(in crate::store) async fn insert_completing(
        &self,
        order: &mut Order,
        items: &str,
        hold: &Hold,
        render: &Arc<Render>,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let (mut placed, items, hold, render) = (
            order.clone(),
            items.to_string(),
            hold.clone(),
            render.clone(),
        );
        let done = self
            .writer()
            .write_atomic(move |s| {
                placed.created_at = s.place()?;
                placed.updated_at = placed.created_at;
                let response = render(&placed).map_err(StoreError::Encode)?;
                let completed = s
                    .conn
                    .prepare_cached(sql::COMPLETE_KEY)
                    .and_then(|mut st| {
                        st.execute(rusqlite::params![
                            i64::from(response.status),
                            encode_headers(&response.headers),
                            response.body,
                            hold.scope,
                            hold.key.as_str(),
                            timestamp::format(hold.created_at),
                        ])
                    })
                    .map_err(from_sqlite)?;
                // The hold was lost meanwhile: store nothing (the savepoint is empty).
                if completed != 1 {
                    return Ok(None);
                }
                insert(s.conn, &placed, &items)?;
                Ok(Some((placed.created_at, response)))
            })
            .await?;
        Ok(done.map(|(at, response)| {
            order.created_at = at;
            order.updated_at = at;
            response
        }))
    }

    pub(in crate::store) async fn release(&self, hold: &Hold) -> Result<(), StoreError> {
        let hold = hold.clone();
        self.writer()
            .write(move |s| {
                s.conn
                    .prepare_cached(sql::RELEASE_KEY)
                    .and_then(|mut st| {
                        st.execute(rusqlite::params![
                            hold.scope,
                            hold.key.as_str(),
                            timestamp::format(hold.created_at),
                        ])
                    })
                    .map_err(from_sqlite)?;
                Ok(())
            })
            .await
    }

    pub(in crate::store) async fn purge_idempotency(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        self.writer()
            .write(move |s| {
                let purged = s
                    .conn
                    .prepare_cached(&sql::purge_keys("rowid"))
                    .and_then(|mut st| st.execute(rusqlite::params![timestamp::format(now), batch]))
                    .map_err(from_sqlite)?;
                Ok(u64::try_from(purged).unwrap_or_default())
            })
            .await
    }
}
