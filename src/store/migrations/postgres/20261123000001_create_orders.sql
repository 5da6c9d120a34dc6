-- Orders. Line items are stored as a JSON array on the order: they never change after the order
-- is created, and are always read together with it.
CREATE TABLE orders (
    id          UUID        PRIMARY KEY,          -- UUIDv7
    customer_id TEXT        NOT NULL,
    currency    TEXT        NOT NULL,
    items       JSONB       NOT NULL,             -- [{"sku", "quantity", "unit_price_minor"}]
    total_minor BIGINT      NOT NULL,             -- money is integer minor units, never floats
    status      TEXT        NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    version     BIGINT      NOT NULL
);

-- Newest-first listing, optionally filtered by status or customer.
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_created_idx ON orders (status, created_at DESC, id DESC);
CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at DESC, id DESC);
