-- Idempotency-Key records: one per (client scope, key). While the first request runs, status is
-- NULL and locked_until bounds how long it may hold the key (a crashed replica's hold lapses).
-- Once done, the response is kept until expires_at so that a retry on any replica replays it.
CREATE TABLE idempotency_keys (
    scope        TEXT        NOT NULL,         -- the client: "key:<api key id>" or "ip:<address>"
    key          TEXT        NOT NULL,         -- the Idempotency-Key header value
    fingerprint  TEXT        NOT NULL,         -- SHA-256 of method, route and body
    status       INTEGER,                      -- NULL while in progress
    headers      TEXT,                         -- JSON [[name, value], ...]
    body         BYTEA,
    locked_until TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

-- The purge deletes by expiry.
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
