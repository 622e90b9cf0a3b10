-- Where the checkout sends a payer once paid when the invoice names no return URL of its own
-- (set by the merchant's owner in the dashboard's Settings page); NULL = nowhere.
ALTER TABLE merchants ADD COLUMN default_return_url TEXT;
