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
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const root = path.resolve(__dirname, "..", "..");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const binary = path.join(root, "target", "debug", "depositd");
const artifacts = path.join(root, "test-artifacts");

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function until(what, check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/// "21.5892" with 6 decimals -> 21589200n.
function toBaseUnits(display, decimals) {
  const [whole, fraction = ""] = display.split(".");
  return BigInt(whole + fraction.padEnd(decimals, "0").slice(0, decimals));
}

/// Sends `amount` (display units) of the dev token `symbol` from the payer to `address`.
async function payToken(info, symbol, address, amount, decimals) {
  const data = "0xa9059cbb" + address.slice(2).toLowerCase().padStart(64, "0") +
    toBaseUnits(amount, decimals).toString(16).padStart(64, "0");
  const sent = await fetch(info.rpc_url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_sendTransaction",
      params: [{ from: info.payer_address, to: info.tokens[symbol], data }] }),
  });
  const receipt = await sent.json();
  assert.ok(receipt.result, JSON.stringify(receipt));
  return receipt.result;
}

/// A page of a fresh browser context at `width`, signed in as the demo owner; `problems` collects
/// console errors and requests to another origin.
async function signedIn(browser, info, width, problems) {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  const page = await context.newPage();
  page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
  page.on("request", (request) => {
    if (!request.url().startsWith(info.api_url) && !request.url().startsWith("data:")) problems.push(request.url());
  });
  await page.goto(`${info.dashboard_url}/login`);
  await page.fill("#email", info.dashboard_email);
  await page.fill("#password", info.dashboard_password);
  await page.press("#password", "Enter");
  await page.waitForURL(`${info.dashboard_url}`);
  return { context, page };
}

test("an owner watches an invoice turn paid on its dashboard page", { timeout: 300_000 }, async () => {
  if (!fs.existsSync(chromiumPath)) {
    assert.ok(!process.env.CI, `CI is set but ${chromiumPath} is missing (.ci/run installs Debian's chromium)`);
    console.log(`*** SKIPPING the browser test: no Chromium at ${chromiumPath} ***`);
    return;
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "depositd-dashboard-invoices-"));
  const [apiPort, anvilPort] = [await freePort(), await freePort()];
  const daemon = spawn(
    binary,
    ["dev", "--data-dir", dataDir, "--api-port", String(apiPort), "--anvil-port", String(anvilPort)],
    { cwd: root, stdio: "ignore" },
  );
  let browser;
  try {
    const info = await until(
      "depositd dev",
      async () => {
        const dev = JSON.parse(fs.readFileSync(path.join(dataDir, "dev.json"), "utf8"));
        const health = await fetch(`${dev.api_url}/healthz`);
        return health.ok ? dev : undefined;
      },
      90_000,
    );
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"],
    });
    fs.mkdirSync(artifacts, { recursive: true });
    const problems = [];
    const { context, page } = await signedIn(browser, info, 1280, problems);

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
    const phone = await signedIn(browser, info, 420, problems);
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
  } finally {
    if (browser) await browser.close();
    daemon.kill("SIGINT");
  }
});
