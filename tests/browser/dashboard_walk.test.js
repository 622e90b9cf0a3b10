// The whole merchant path through the dashboard in one walk, in a real browser (Debian's
// Chromium via playwright-core) against the real `depositd dev` (anvil, the watcher, the settler
// and the delivery worker all running), as issue 20 asks: the operator invites an owner, who
// accepts the invite, signs in, creates a test API key and uses it with curl to create an invoice;
// the invoice is paid on anvil and its open page turns paid without a reload by the test; its
// ledger entries are found and exported as CSV; a webhook endpoint added in the dashboard gets the
// invoice's `invoice.paid` and it is redelivered from the event log; a payout is created with the
// password re-entered and seen confirmed on chain; the key is revoked and curl gets 401.
// Its steps' screenshots are dashboard-walk-*.png; at the end it opens every page at phone and
// desktop width (dashboard-page-<page>-<phone|desktop>.png), none wider than the screen.
//
// Run by `make test` after the Rust suite (which builds target/debug/depositd).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const support = require("./support");
const { root, binary, artifacts, withDev, payUsdc, watchProblems, receiver } = support;

const PASSWORD = "the walking owner's password";
const DESTINATION = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

/// The walk asks every 250 ms.
const until = (what, check, timeoutMs) => support.until(what, check, timeoutMs, 250);

/// curl, as a merchant's shell would run it: `[status, body]`.
function curl(args) {
  const out = execFileSync("curl", ["-sS", "-w", "\n%{http_code}", ...args], { encoding: "utf8" });
  const cut = out.lastIndexOf("\n");
  return [Number(out.slice(cut + 1)), out.slice(0, cut)];
}

test("a merchant walks the whole dashboard path", { timeout: 600_000 }, () =>
  withDev("depositd-dashboard-walk-", async ({ info, dataDir, launch, defer }) => {
    const hooks = await receiver("ok");
    defer(() => hooks.server.close());
    const dashboard = info.dashboard_url;
    fs.mkdirSync(artifacts, { recursive: true });
    const browser = await launch();
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    const page = await context.newPage();
    const problems = watchProblems(page, info);
    const shot = (name) => page.screenshot({ path: path.join(artifacts, `dashboard-walk-${name}.png`), fullPage: true });

    // 1. The operator invites an owner; the owner sets a password from the link and signs in.
    const link = execFileSync(binary, ["--config", path.join(dataDir, "depositd.toml"), "merchant", "invite",
      "--merchant", "Demo Shop", "--email", "walker@demo.example", "--role", "owner"], { cwd: root, encoding: "utf8" }).trim();
    await page.goto(link);
    await page.fill("#password", PASSWORD);
    await page.click("button[type=submit]");
    await page.waitForSelector("text=Your password is set");
    await page.goto(`${dashboard}/login`);
    await page.fill("#email", "walker@demo.example");
    await page.fill("#password", PASSWORD);
    await page.press("#password", "Enter");
    await page.waitForURL(dashboard);
    await shot("overview");

    // 2. A webhook endpoint for invoice.paid, at the test's own receiver.
    await page.click("nav a:has-text('Webhooks')");
    const hookUrl = `http://127.0.0.1:${hooks.port}/walk`;
    await page.fill("#url", hookUrl);
    await page.fill("#description", "walk");
    await page.check("input[name=event][value='invoice.paid']");
    await page.click("button:has-text('Add endpoint')");
    assert.match(await page.inputValue("#new-secret"), /^whsec_/);

    // 3. A test key, created in the dashboard, shown once; curl creates an invoice with it.
    await page.click("nav a:has-text('API keys')");
    await page.fill("#name", "walk");
    await page.check("input[name=mode][value=test]");
    await page.click("button:has-text('Create key')");
    const key = await page.inputValue("#new-secret");
    assert.match(key, /^dk_test_[0-9a-f]{48}$/);
    // Its copy button puts it on the clipboard.
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: info.api_url });
    await page.click("button.copy[data-copy=new-secret]");
    await page.waitForSelector("button.copy:has-text('Copied')", { timeout: 5_000 });
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
    const [created, body] = curl(["-X", "POST", `${info.api_url}/api/v1/invoices`, "-H", `x-api-key: ${key}`,
      "-H", "content-type: application/json", "-H", "idempotency-key: walk-1",
      "-d", JSON.stringify({ amount: "20", currency: "USD", asset: "USDC", external_id: "walk-order-1" })]);
    assert.equal(created, 201, body);
    const invoice = JSON.parse(body);

    // 4. Its page is open while it is paid on anvil: it turns paid without a reload by the test.
    await page.goto(`${dashboard}/invoices/${invoice.id}`);
    assert.equal((await page.textContent("#invoice-status")).trim(), "pending");
    const txHash = await payUsdc(info, invoice.pay.address, invoice.pay.amount, invoice.pay.decimals);
    await until("the invoice page to show paid", async () => (await page.textContent("#invoice-status")).trim() === "paid", 120_000);
    assert.match((await page.textContent("#payments")).toLowerCase(), new RegExp(txHash.toLowerCase()));
    await shot("invoice-paid");

    // 5. Its ledger entries, filtered by the invoice, and their CSV export.
    await page.click("nav a:has-text('Balances and ledger')");
    await page.fill("#invoice_id", invoice.id);
    await page.click("button:has-text('Filter')");
    await page.waitForURL(/invoice_id=/);
    const journal = await page.textContent("table.journal");
    assert.ok(journal.includes("deposit_credit"), journal);
    await shot("ledger");
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("a:has-text('Export CSV')")]);
    const rows = fs.readFileSync(await download.path(), "utf8").trim().split("\r\n").map((line) => line.split(","));
    const column = (name) => rows[0].indexOf(name);
    assert.ok(rows.length > 2, rows.join("\n"));
    assert.ok(rows.slice(1).every((r) => r[column("invoice_id")] === invoice.id), rows.join("\n"));

    // 6. The endpoint got invoice.paid; the event log shows the delivery; redeliver sends it again.
    await until("invoice.paid at the receiver", async () => hooks.hits.some((h) => JSON.parse(h.body).type === "invoice.paid"), 60_000);
    await page.goto(`${dashboard}/developers/events?type=invoice.paid&resource_id=${invoice.id}`);
    await page.click("article.event h2 a");
    await page.waitForURL(/\/dashboard\/developers\/events\/[0-9a-f-]{36}$/);
    const eventId = page.url().split("/").pop();
    await until("the delivery shown", async () => {
      await page.reload();
      return (await page.locator("td.status-code:has-text('200')").count()) === 1;
    }, 30_000);
    await page.click("button:has-text('Redeliver')");
    await until("the redelivery", async () => hooks.hits.filter((h) => h.headers["webhook-id"] === eventId).length === 2, 30_000);
    await shot("event");

    // 7. A payout, confirmed with the password, seen confirmed on chain.
    await page.click("nav a:has-text('Payouts')");
    await page.click("a:has-text('New payout')");
    await page.selectOption("#asset", "USDC");
    await page.fill("#destination", DESTINATION);
    await page.fill("#amount", "2.5");
    await page.fill("#reference", "walk payout");
    await page.click("button:has-text('Review payout')");
    assert.match(await page.textContent("h1"), /Confirm the payout/);
    await page.fill("#password", PASSWORD);
    await page.click("button:has-text('Confirm and send')");
    await page.waitForURL(/\/dashboard\/payouts\/[0-9a-f-]{36}$/);
    await until("the payout confirmed", async () => {
      await page.reload();
      return (await page.textContent("#payout-status")).trim() === "confirmed";
    }, 180_000);
    await shot("payout");

    // 8. The key is revoked in the dashboard; curl is refused (within the key cache's second).
    await page.click("nav a:has-text('API keys')");
    await page.click(`button[aria-label^='Revoke ${key.slice(0, 12)}']`);
    await until("curl refused", async () => {
      const [status] = curl([`${info.api_url}/api/v1/invoices/${invoice.id}`, "-H", `x-api-key: ${key}`]);
      return status === 401;
    }, 5_000);
    const [, refusal] = curl([`${info.api_url}/api/v1/invoices/${invoice.id}`, "-H", `x-api-key: ${key}`]);
    assert.equal(JSON.parse(refusal).error.code, "api_key_revoked");

    // Everything the walk did is in the event log as what this member did.
    await page.goto(`${dashboard}/developers/events?type=member.action`);
    const log = await page.textContent("main");
    assert.match(log, /walker@demo\.example \(owner\) did webhook_endpoint\.create/);
    assert.match(log, /did payout\.create/);
    // The overview now charts the paid volume and lists the payment.
    await page.goto(dashboard);
    assert.ok(await page.locator("main svg").count() >= 1, "the overview draws its charts");
    assert.match(await page.textContent("main"), /USDC/);
    await shot("overview-after");

    // Every page at phone and desktop width: it answers 200, nothing is wider than a phone's
    // screen (tables scroll in their own boxes), and its screenshot is saved.
    const pages = [["overview", ""], ["invoices", "/invoices"], ["invoice", `/invoices/${invoice.id}`],
      ["invoice-new", "/invoices/new"], ["static-addresses", "/static-addresses"], ["ledger", "/ledger"],
      ["payouts", "/payouts"], ["payout-new", "/payouts/new"], ["refund", `/invoices/${invoice.id}/refund`],
      ["api-keys", "/developers/api-keys"], ["webhooks", "/developers/webhooks"], ["events", "/developers/events"],
      ["settings", "/settings"], ["team", "/settings/team"], ["security", "/settings/security"]];
    for (const [width, label] of [[420, "phone"], [1280, "desktop"]]) {
      await page.setViewportSize({ width, height: 900 });
      for (const [name, route] of pages) {
        const response = await page.goto(`${dashboard}${route}`);
        assert.equal(response.status(), 200, name);
        const wide = await page.evaluate(() => document.documentElement.scrollWidth);
        // On failure, name the elements that stick out (the innermost ones first).
        const offenders = wide <= width ? [] : await page.evaluate((limit) => Array.from(document.querySelectorAll("body *"))
          .filter((el) => el.getBoundingClientRect().right > limit && !el.closest(".table-wrap"))
          .map((el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className}`).reverse().slice(0, 6), width);
        assert.ok(wide <= width, `${name} is ${wide} px wide at ${width} px: ${offenders.join(", ")}`);
        await page.screenshot({ path: path.join(artifacts, `dashboard-page-${name}-${label}.png`), fullPage: true });
      }
    }
    assert.deepEqual(problems, [], "nothing blocked, nothing from another origin");
    await context.close();
  }));
