// The dashboard's Invoices pages in a real browser (Debian's Chromium, driven by playwright-core)
// against the real `depositd dev`: the demo owner signs in, creates a test API key, creates an
// invoice with it through the merchant API (fetch), opens the invoice's page, pays it on the dev
// chain, and watches the page turn paid without reloading by hand (the page refreshes itself while
// the invoice is open: a meta refresh, no script). Nothing is blocked by the Content-Security-Policy
// and no request leaves the origin. Screenshots of the list and the detail at phone and desktop
// width go to test-artifacts/.
//
// Run by `make test` after the Rust suite (which builds target/debug/depositd).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { artifacts, until, withDev, payToken, demoOwnerPage } = require("./support");

test("an owner watches an invoice turn paid on its dashboard page", { timeout: 300_000 }, () =>
  withDev("depositd-dashboard-invoices-", async ({ info, launch }) => {
    const browser = await launch();
    fs.mkdirSync(artifacts, { recursive: true });
    const problems = [];
    const { context, page } = await demoOwnerPage(browser, info, { viewport: { width: 1280, height: 900 } }, problems);

    // A test key, created in the dashboard.
    await page.click("nav a:has-text('API keys')");
    await page.fill("#name", "invoices browser test");
    await page.check("input[name=mode][value=test]");
    await page.click("button:has-text('Create key')");
    const secret = await page.inputValue("#new-secret");
    assert.match(secret, /^dk_test_[0-9a-f]{48}$/);

    // An invoice made with it through the merchant API.
    const created = await fetch(`${info.api_url}/api/v1/invoices`, {
      method: "POST",
      headers: { "x-api-key": secret, "content-type": "application/json" },
      body: JSON.stringify({ amount: "12.5", currency: "USD", asset: "USDC", external_id: `browser-${Date.now()}`,
        customer_email: "payer@example.com" }),
    });
    assert.equal(created.status, 201);
    const invoice = await created.json();

    // The list shows it, linking to its page.
    await page.click("nav a:has-text('Invoices')");
    await page.waitForURL(`${info.dashboard_url}/invoices`);
    assert.match(await page.textContent("h1"), /Invoices/);
    await page.click(`a[href="/dashboard/invoices/${invoice.id}"]`);
    await page.waitForURL(`${info.dashboard_url}/invoices/${invoice.id}`);
    assert.equal((await page.textContent("#invoice-status")).trim(), "pending");
    assert.match(await page.textContent("#payments"), /No payment yet/);

    // Paid on the dev chain; the open page turns paid by itself (no reload from here).
    let loads = 0;
    page.on("load", () => { loads += 1; });
    const txHash = await payToken(info, "USDC", invoice.pay.address, invoice.pay.amount, invoice.pay.decimals);
    await until("the page to show paid", async () => (await page.textContent("#invoice-status")).trim() === "paid", 120_000);
    assert.ok(loads >= 1, "the page refreshed itself");
    assert.match((await page.textContent("#payments")).toLowerCase(), new RegExp(txHash.toLowerCase()));
    assert.match(await page.textContent("#ledger"), /deposit_credit/);
    // Final: it stops refreshing.
    assert.equal(await page.locator("meta[http-equiv=refresh]").count(), 0);
    const settled = loads;
    await new Promise((r) => setTimeout(r, 4_000));
    assert.equal(loads, settled, "a paid invoice's page does not refresh");
    await page.screenshot({ path: path.join(artifacts, "dashboard-invoice-desktop.png"), fullPage: true });
    await page.goto(`${info.dashboard_url}/invoices`);
    await page.screenshot({ path: path.join(artifacts, "dashboard-invoices-desktop.png"), fullPage: true });
    await context.close();

    // The same pages at phone width.
    const phone = await demoOwnerPage(browser, info, { viewport: { width: 420, height: 900 } }, problems);
    await phone.page.goto(`${info.dashboard_url}/invoices?status=paid`);
    assert.ok((await phone.page.textContent("table")).includes(invoice.id));
    await phone.page.screenshot({ path: path.join(artifacts, "dashboard-invoices-phone.png"), fullPage: true });
    await phone.page.goto(`${info.dashboard_url}/invoices/${invoice.id}`);
    assert.equal((await phone.page.textContent("#invoice-status")).trim(), "paid");
    // Nothing wider than the phone's screen but the tables' own scrolling boxes.
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 420, `the page is ${overflow}px wide at 420px`);
    await phone.page.screenshot({ path: path.join(artifacts, "dashboard-invoice-phone.png"), fullPage: true });
    await phone.context.close();
    assert.deepEqual(problems, [], "nothing blocked, nothing from another origin");
  }));
