-- Issue 20: the dashboard overview reads a merchant's latest payments and its invoices paid in
-- the last 30 days.
CREATE INDEX deposits_merchant_detected ON deposits (merchant_id, detected_at);
CREATE INDEX invoices_merchant_finished ON invoices (merchant_id, finished_at);
