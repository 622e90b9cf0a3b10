-- Which API shape made the invoice (its "view"): 'invoice' (seed 001's /api/v1/invoices),
-- 'create_invoice' (seed 003's /api/v1/create-invoice) or 'hosted_payment' (seed 004's
-- /api/v1/hosted-payments). Webhooks about the invoice carry that view as `data`. Every invoice
-- made before this migration was made through seed 001's route.
ALTER TABLE invoices ADD COLUMN api_view TEXT NOT NULL DEFAULT 'invoice';
-- Seed 004's customer_name ("for receipts").
ALTER TABLE invoices ADD COLUMN customer_name TEXT;
