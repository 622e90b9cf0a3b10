-- Issue 20 review: a static address's transfers are read by `deposits.static_address_id`, which
-- no index covered; the Webhooks pages count each endpoint's failed attempts of
-- the last 24 hours (`store::webhooks::recent_failures`), which now starts from the attempts in
-- that window instead of every delivery the merchant's endpoints ever had.
CREATE INDEX deposits_static_address ON deposits (static_address_id);
CREATE INDEX webhook_attempts_attempted ON webhook_attempts (attempted_at, delivery_id);
