-- SKUs are now claims in the event log's `unique_claims` (kind `product_sku`, value
-- `<merchant id>:<sku>`), taken in the same statement as the listing's events. The event log's
-- migrations run before these, so the table exists.
INSERT INTO unique_claims (kind, value, category, stream_id, claimed_at)
SELECT 'product_sku', merchant_id::text || ':' || sku, 'product', product_id, claimed_at
  FROM command_product_skus
ON CONFLICT DO NOTHING;
DROP TABLE command_product_skus;
