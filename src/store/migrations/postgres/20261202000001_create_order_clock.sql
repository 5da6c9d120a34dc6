-- The place of each new order in the listing is handed out here, one create at a time: the
-- INSERT of an order updates this row first, which holds its lock until the transaction ends,
-- so orders get their created_at in commit order on every replica (see store/postgres.rs).
CREATE TABLE order_clock (
    singleton BOOLEAN     PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    t         TIMESTAMPTZ NOT NULL
);

INSERT INTO order_clock (t) SELECT COALESCE(max(created_at), '-infinity') FROM orders;
