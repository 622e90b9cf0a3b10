-- Origins (scheme://host[:port]) whose browser code may call the payer API for this merchant's
-- invoices (CORS); a JSON array, NULL = none: only the hosted checkout page (same origin) may.
ALTER TABLE merchants ADD COLUMN checkout_origins TEXT;
