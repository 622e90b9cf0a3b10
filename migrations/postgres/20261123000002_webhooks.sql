-- Webhook delivery (issue 6).

-- Deleted endpoints stay as rows (their deliveries and attempts are history) but are gone from
-- the API and receive nothing. last_success_at tells an endpoint failing for days.
ALTER TABLE webhook_endpoints ADD COLUMN deleted_at BIGINT;
ALTER TABLE webhook_endpoints ADD COLUMN last_success_at BIGINT;

ALTER TABLE webhook_deliveries ADD COLUMN delivered_at BIGINT;
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, state);
CREATE INDEX events_merchant_type ON events (merchant_id, event_type, id);

-- The secret that signs deliveries to per-invoice and per-static-address callback_urls (seed
-- 003), one per merchant, sealed like endpoint secrets; rotated (and shown) through the API.
CREATE TABLE merchant_callback_secrets (
    merchant_id                 TEXT PRIMARY KEY REFERENCES merchants(id),
    secret_ciphertext           TEXT NOT NULL,
    previous_secret_ciphertext  TEXT,
    previous_secret_expires_at  BIGINT,
    updated_at                  BIGINT NOT NULL
);
