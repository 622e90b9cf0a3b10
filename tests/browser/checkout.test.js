// The checkout page in a real browser (Debian's Chromium, driven by playwright-core) against the
// real `depositd dev`: a payer opens the checkout URL, reads the amount and address from the page,
// pays with a real transfer on the dev chain, watches the page turn to paid, and is sent back to
// the shop. A screenshot of the paid page is saved to test-artifacts/.
//
// Run by `make test` after the Rust suite (which builds target/debug/depositd).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

const root = path.resolve(__dirname, "..", "..");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

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

test("a payer opens the checkout page, pays, sees it paid and returns to the shop", { timeout: 180_000 }, async () => {
  if (!fs.existsSync(chromiumPath)) {
    assert.ok(!process.env.CI, `CI is set but ${chromiumPath} is missing (.ci/run installs Debian's chromium)`);
    console.log(`*** SKIPPING the browser test: no Chromium at ${chromiumPath} ***`);
    return;
  }
  const visits = [];
  const shop = http.createServer((req, res) => {
    visits.push(req.url);
    res.setHeader("content-type", "text/html");
    res.end("<h1>Thank you for your order</h1>");
  });
  await new Promise((r) => shop.listen(0, "127.0.0.1", r));
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "depositd-browser-"));
  const [apiPort, anvilPort] = [await freePort(), await freePort()];
  const daemon = spawn(
    path.join(root, "target", "debug", "depositd"),
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
    const returnUrl = `http://127.0.0.1:${shop.address().port}/done`;
    const created = await fetch(`${info.api_url}/api/v1/invoices`, {
      method: "POST",
      headers: { "x-api-key": info.api_key, "content-type": "application/json" },
      body: JSON.stringify({ amount: "19.99", currency: "EUR", title: "Browser test order", return_url: returnUrl }),
    });
    assert.equal(created.status, 201);
    const invoice = await created.json();

    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"],
    });
    const page = await browser.newPage({ viewport: { width: 420, height: 900 } });
    const blocked = [];
    page.on("console", (message) => { if (message.type() === "error") blocked.push(message.text()); });
    await page.goto(invoice.checkout_url);
    assert.equal(await page.textContent("h1"), "Browser test order");
    await page.waitForSelector("#countdown:has-text('m ')");
    assert.match(await page.textContent("#status"), /Waiting for payment/);

    // What the payer reads off the page is what they pay.
    const address = await page.inputValue("#address");
    const amount = (await page.textContent("#amount-due")).trim();
    assert.equal(address, invoice.pay.address);
    assert.equal(amount, invoice.pay.amount);
    const data = "0xa9059cbb" + address.slice(2).toLowerCase().padStart(64, "0") +
      toBaseUnits(amount, invoice.pay.decimals).toString(16).padStart(64, "0");
    const sent = await fetch(info.rpc_url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_sendTransaction",
        params: [{ from: info.payer_address, to: info.tokens.USDC, data }] }),
    });
    const receipt = await sent.json();
    assert.ok(receipt.result, JSON.stringify(receipt));

    await page.waitForSelector("#status.paid", { timeout: 60_000 });
    assert.match(await page.textContent("#status"), /Paid/);
    assert.equal(await page.isVisible("#address"), false, "nothing more to send: the address is hidden");
    fs.mkdirSync(path.join(root, "test-artifacts"), { recursive: true });
    await page.screenshot({ path: path.join(root, "test-artifacts", "checkout-paid.png"), fullPage: true });
    await page.waitForURL(/\/done\?invoice_id=/, { timeout: 15_000 });
    assert.deepEqual(visits.filter((v) => v !== "/favicon.ico"), [`/done?invoice_id=${invoice.id}`]);
    assert.deepEqual(blocked, [], "nothing was blocked by the Content-Security-Policy");
  } finally {
    if (browser) await browser.close();
    daemon.kill("SIGINT");
    shop.close();
  }
});
