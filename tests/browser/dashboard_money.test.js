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
/// EIP-55's own example address.
const DESTINATION = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

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

/// Sends `amount` (display units) of the dev USDC from the payer to `address`.
async function payUsdc(info, address, amount, decimals) {
  const data = "0xa9059cbb" + address.slice(2).toLowerCase().padStart(64, "0") +
    toBaseUnits(amount, decimals).toString(16).padStart(64, "0");
  const sent = await fetch(info.rpc_url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_sendTransaction",
      params: [{ from: info.payer_address, to: info.tokens.USDC, data }] }),
  });
  const receipt = await sent.json();
  assert.ok(receipt.result, JSON.stringify(receipt));
}

test("an owner reads the ledger, exports it and creates a payout with the password", { timeout: 300_000 }, async () => {
  if (!fs.existsSync(chromiumPath)) {
    assert.ok(!process.env.CI, `CI is set but ${chromiumPath} is missing (.ci/run installs Debian's chromium)`);
    console.log(`*** SKIPPING the browser test: no Chromium at ${chromiumPath} ***`);
    return;
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "depositd-dashboard-money-"));
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
    const api = (method, route, body) => fetch(`${info.api_url}${route}`, {
      method,
      headers: { "x-api-key": info.api_key, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, body: await r.json() }));

    // The demo merchant is paid 25 USDC on anvil.
    const created = await api("POST", "/api/v1/invoices", { amount: "25", currency: "USD", asset: "USDC" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const invoice = created.body;
    await payUsdc(info, invoice.pay.address, invoice.pay.amount, invoice.pay.decimals);
    await until("the invoice paid", async () => {
      const now = await api("GET", `/api/v1/invoices/${invoice.id}`);
      return now.body.status === "paid";
    }, 60_000);

    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"],
    });
    fs.mkdirSync(artifacts, { recursive: true });
    for (const [width, label] of [[420, "phone"], [1280, "desktop"]]) {
      const context = await browser.newContext({ viewport: { width, height: 900 }, acceptDownloads: true });
      const page = await context.newPage();
      const problems = [];
      page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
      page.on("request", (request) => {
        if (!request.url().startsWith(info.api_url) && !request.url().startsWith("data:")) problems.push(request.url());
      });

      await page.goto(`${info.dashboard_url}/login`);
      await page.fill("#email", info.dashboard_email);
      await page.fill("#password", info.dashboard_password);
      await page.press("#password", "Enter");
      await page.waitForURL(`${info.dashboard_url}`);

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
  } finally {
    if (browser) await browser.close();
    daemon.kill("SIGINT");
  }
});
