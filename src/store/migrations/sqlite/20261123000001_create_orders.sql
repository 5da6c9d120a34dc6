-- Orders. Line items are stored as a JSON array on the order: they never change after the order
-- is created, and are always read together with it.
CREATE TABLE orders (
    id          TEXT    PRIMARY KEY NOT NULL,  -- UUIDv7, hyphenated
    customer_id TEXT    NOT NULL,
    currency    TEXT    NOT NULL,
    items       TEXT    NOT NULL,              -- [{"sku", "quantity", "unit_price_minor"}]
    total_minor INTEGER NOT NULL,              -- money is integer minor units, never floats
    status      TEXT    NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    created_at  TEXT    NOT NULL,              -- RFC 3339 UTC, fixed width: sorts as time
    updated_at  TEXT    NOT NULL,
    version     INTEGER NOT NULL
) STRICT;

-- Newest-first listing, optionally filtered by status or customer.
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_created_idx ON orders (status, created_at DESC, id DESC);
CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at DESC, id DESC);
