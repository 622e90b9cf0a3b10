// The dashboard's money pages in a real browser (Debian's Chromium, driven by playwright-core)
// against the real `depositd dev`: the demo merchant is paid 25 USDC on anvil (an invoice through
// the API, paid by the dev payer), then its owner (the demo login `depositd dev` prints) opens the
// Balances and ledger page, downloads the CSV export, creates a payout re-entering the password
// and sees it listed. Nothing is blocked by the Content-Security-Policy and no request leaves the
// origin. Screenshots at phone and desktop width go to test-artifacts/.
//
// Run after `cargo build -p depositd --bin depositd`: `node --test tests/browser/dashboard_money.test.js`.
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { artifacts, until, withDev, payUsdc, demoApi, demoOwnerPage } = require("./support");

/// EIP-55's own example address.
const DESTINATION = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

test("an owner reads the ledger, exports it and creates a payout with the password", { timeout: 300_000 }, () =>
  withDev("depositd-dashboard-money-", async ({ info, launch }) => {
    const api = demoApi(info);

    // The demo merchant is paid 25 USDC on anvil.
    const created = await api("POST", "/api/v1/invoices", { amount: "25", currency: "USD", asset: "USDC" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const invoice = created.body;
    await payUsdc(info, invoice.pay.address, invoice.pay.amount, invoice.pay.decimals);
    await until("the invoice paid", async () => {
      const now = await api("GET", `/api/v1/invoices/${invoice.id}`);
      return now.body.status === "paid";
    }, 60_000);

    const browser = await launch();
    fs.mkdirSync(artifacts, { recursive: true });
    for (const [width, label] of [[420, "phone"], [1280, "desktop"]]) {
      const { context, page, problems } = await demoOwnerPage(browser, info,
        { viewport: { width, height: 900 }, acceptDownloads: true });

      // The ledger: balances and the journal with the invoice's entries.
      await page.click("nav a:has-text('Balances and ledger')");
      await page.waitForURL(`${info.dashboard_url}/ledger`);
      assert.match(await page.textContent("h1"), /Balances and ledger/);
      const journal = await page.textContent("table.journal");
      assert.ok(journal.includes("deposit_credit") && journal.includes("USDC"), journal);
      await page.screenshot({ path: path.join(artifacts, `dashboard-ledger-${label}.png`), fullPage: true });

      // The CSV export of the journal filtered to USDC: a download, parseable, the invoice's lines.
      await page.selectOption("#asset", "USDC");
      await page.click("button:has-text('Filter')");
      await page.waitForURL(/asset=USDC/);
      const [download] = await Promise.all([page.waitForEvent("download"), page.click("a:has-text('Export CSV')")]);
      assert.equal(download.suggestedFilename(), "ledger.csv");
      const csv = fs.readFileSync(await download.path(), "utf8");
      const rows = csv.trim().split("\r\n").map((line) => line.split(","));
      assert.equal(rows[0][0], "entry_id");
      const column = (name) => rows[0].indexOf(name);
      const invoiceRows = rows.slice(1).filter((r) => r[column("invoice_id")] === invoice.id);
      assert.ok(invoiceRows.length >= 2, csv);
      assert.ok(invoiceRows.every((r) => r[column("asset")] === "USDC"), csv);

      // A payout: the form, the confirmation with the fee reserve, the password again.
      await page.click("nav a:has-text('Payouts')");
      await page.click("a:has-text('New payout')");
      await page.selectOption("#asset", "USDC");
      await page.fill("#destination", DESTINATION.toLowerCase());
      await page.fill("#amount", "9999");
      await page.click("button:has-text('Review payout')");
      assert.match(await page.textContent("#amount-error"), /insufficient available balance/);
      problems.length = 0; // that refusal is a 400 page, which Chromium logs as a failed load
      await page.fill("#amount", "1.5");
      await page.fill("#reference", `browser-${label}`);
      await page.click("button:has-text('Review payout')");
      assert.match(await page.textContent("h1"), /Confirm the payout/);
      const summary = await page.textContent("dl.facts");
      assert.ok(summary.includes("Network fee reserve") && summary.includes(DESTINATION), summary);
      await page.screenshot({ path: path.join(artifacts, `dashboard-payout-confirm-${label}.png`), fullPage: true });
      await page.fill("#password", info.dashboard_password);
      await page.click("button:has-text('Confirm and send')");
      await page.waitForURL(/\/dashboard\/payouts\/[0-9a-f-]{36}$/);
      assert.match(await page.textContent("#payout-status"), /pending|submitted|confirmed/);
      await page.screenshot({ path: path.join(artifacts, `dashboard-payout-${label}.png`), fullPage: true });
      await page.click("a:has-text('All payouts')");
      const listed = await page.textContent("table");
      assert.ok(listed.includes(`browser-${label}`) && listed.includes("1.5"), listed);
      await page.screenshot({ path: path.join(artifacts, `dashboard-payouts-${label}.png`), fullPage: true });

      assert.deepEqual(problems, [], "nothing blocked, nothing from another origin");
      await context.close();
    }
  }));
