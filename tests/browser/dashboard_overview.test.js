// The dashboard's overview, team page and TOTP second factor in a real browser (Debian's
// Chromium, driven by playwright-core) against the real `depositd dev`: an invoice is paid on
// anvil, the demo owner (the login `depositd dev` prints) signs in and sees the overview's
// balances, its server-drawn SVG charts (paid volume, invoices by status) and the payment
// linking to its invoice; the team page lists the demo owner. Then the owner enrols an
// authenticator app, the code computed here (node's crypto, RFC 6238), signs out, and signs in
// again with the password and a code. Nothing is blocked by the Content-Security-Policy and no
// request leaves the origin. Screenshots at phone and desktop width go to test-artifacts/.
//
// Run by `make test` after the Rust suite (which builds target/debug/depositd).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { artifacts, until, withDev, transferToken, demoApi, demoOwnerPage } = require("./support");

/// RFC 4648 base32 (no padding) to bytes.
function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, "")) {
    const index = alphabet.indexOf(c);
    assert.ok(index >= 0, `base32: ${c}`);
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/// The RFC 6238 code (HMAC-SHA-1, 30-second steps, 6 digits) of `secret` at `step`.
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const hash = crypto.createHmac("sha1", secret).update(counter).digest();
  const offset = hash[19] & 0x0f;
  const number = (hash.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(number).padStart(6, "0");
}

function currentStep() {
  return Math.floor(Date.now() / 1000 / 30);
}

test("the overview's charts, the team page, and signing in with a TOTP code", { timeout: 300_000 }, () =>
  withDev("depositd-overview-", async ({ info, launch }) => {
    const api = demoApi(info);

    // An invoice paid on anvil, one left pending: the charts have something to draw.
    const created = await api("POST", "/api/v1/invoices", { amount: "7.25", currency: "USD", asset: "USDC" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const invoice = created.body;
    assert.equal((await api("POST", "/api/v1/invoices", { amount: "2", currency: "USD", asset: "USDC" })).status, 201);
    const txHash = await transferToken(info, "USDC", invoice.pay.address, invoice.pay.amount_base_units);
    await until("the invoice paid", async () => {
      const now = await api("GET", `/api/v1/invoices/${invoice.id}`);
      return now.body.status === "paid";
    }, 120_000);

    const browser = await launch();
    fs.mkdirSync(artifacts, { recursive: true });
    for (const [width, label] of [[420, "phone"], [1280, "desktop"]]) {
      const { context, page, problems } = await demoOwnerPage(browser, info, { viewport: { width, height: 900 } });

      // The overview: balances, both charts (SVG with titles and text labels), the payment.
      assert.match(await page.textContent("h1"), /Overview/);
      const balances = await page.textContent("section[aria-labelledby=balances-heading] table");
      assert.match(balances, /In transit/);
      assert.match(balances, /USDC/);
      const volume = page.locator("svg#chart-volume-0");
      assert.equal(await volume.count(), 1);
      assert.match(await volume.locator("title").first().textContent(), /Paid volume per day, USDC/);
      assert.ok((await volume.locator("rect").count()) >= 1, "a bar for today");
      assert.match(await volume.locator("rect title").first().textContent(), /7\.25 USDC/);
      assert.ok((await volume.boundingBox()).width <= width, "the chart fits the width");
      const statuses = page.locator("svg#chart-statuses");
      assert.match(await statuses.textContent(), /paid/);
      assert.match(await statuses.textContent(), /pending/);
      assert.match(await page.textContent("figcaption >> nth=0"), /7\.25 USDC paid/);
      const payment = page.locator(`a[href="/dashboard/invoices/${invoice.id}"]`);
      assert.equal(await payment.count(), 1, "the latest payment links to its invoice");
      assert.match(await page.textContent("section[aria-labelledby=payments-heading]"), new RegExp(txHash.slice(2, 18)));
      assert.equal(await page.locator("script").count(), 0);
      await page.screenshot({ path: path.join(artifacts, `dashboard-overview-charts-${label}.png`), fullPage: true });

      // The team.
      await page.goto(`${info.dashboard_url}/settings/team`);
      assert.match(await page.textContent("h1"), /Team/);
      assert.match(await page.textContent("table"), new RegExp(`${info.dashboard_email.replace(".", "\\.")} \\(you\\)`));
      assert.equal(await page.locator("#email").count(), 1, "an owner can invite");
      await page.screenshot({ path: path.join(artifacts, `dashboard-team-${label}.png`), fullPage: true });

      if (label === "desktop") {
        // Enrol an authenticator app: the code computed here from the key the page shows once.
        await page.click("a:has-text('two-factor authentication')");
        await page.click("button:has-text('Set up an authenticator app')");
        const uri = await page.inputValue("#totp-uri");
        assert.match(uri, /^otpauth:\/\/totp\//);
        assert.equal(await page.locator("figure.qr svg").count(), 1, "the QR code is inline SVG");
        const secret = base32Decode(await page.inputValue("#totp-secret"));
        await page.screenshot({ path: path.join(artifacts, `dashboard-totp-enrol-${label}.png`), fullPage: true });
        const enrolStep = currentStep();
        await page.fill("#code", totp(secret, enrolStep));
        await page.click("button:has-text('Turn on')");
        await page.waitForSelector("text=On since");
        await page.screenshot({ path: path.join(artifacts, `dashboard-totp-on-${label}.png`), fullPage: true });

        // Sign out, and in again: the password, then a code (a step after the one used: a code
        // is accepted once, and the next step's is accepted already).
        await page.click(".who button:has-text('Log out') >> nth=0");
        await page.waitForURL(`${info.dashboard_url}/login`);
        await page.fill("#email", info.dashboard_email);
        await page.fill("#password", info.dashboard_password);
        await page.press("#password", "Enter");
        await page.waitForSelector("#code");
        assert.match(await page.textContent("h1"), /Authenticator code/);
        await page.screenshot({ path: path.join(artifacts, `dashboard-totp-code-${label}.png`), fullPage: true });
        await page.fill("#code", totp(secret, Math.max(currentStep(), enrolStep) + 1));
        await page.press("#code", "Enter");
        await page.waitForURL(info.dashboard_url);
        assert.match(await page.textContent("h1"), /Overview/);
      }
      assert.deepEqual(problems, [], "nothing blocked, nothing from another origin");
      await context.close();
    }
  }));
