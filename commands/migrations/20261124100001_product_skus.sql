-- SKUs are unique per merchant. The command side claims a SKU in the same transaction that
-- appends the product's ProductListed event, so a SKU is taken exactly when a listing commits.
CREATE TABLE command_product_skus (
    merchant_id UUID        NOT NULL,
    sku         TEXT        NOT NULL,
    product_id  UUID        NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, sku)
);
