-- Issue 20: invites are e-mailed (through the e-mail outbox, like receipts) when SMTP is configured.
ALTER TABLE emails DROP CONSTRAINT emails_kind_check;
ALTER TABLE emails ADD CONSTRAINT emails_kind_check
    CHECK (kind IN ('receipt', 'invoice_paid', 'payout_failed', 'webhook_endpoint_disabled', 'member_invite'));
