// The merchant dashboard in a real browser (Debian's Chromium, driven by playwright-core) against
// the real `depositd dev`: the operator invites a developer (`depositd merchant invite`), who opens
// the link, sets a password, signs in, sees the overview, creates a test API key (shown once),
// sees it listed, and the key works with the merchant API; then the demo owner login that
// `depositd dev` prints signs in too. Nothing is blocked by the Content-Security-Policy and no
// request leaves the origin. Screenshots at phone and desktop width go to test-artifacts/.
//
// Run by `make test` after the Rust suite (which builds target/debug/depositd).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { root, binary, artifacts, withDev, watchProblems } = require("./support");

test("a developer accepts an invite, signs in and creates a test API key", { timeout: 300_000 }, () =>
  withDev("depositd-dashboard-", async ({ info, dataDir, launch }) => {
    assert.equal(info.dashboard_url, `${info.api_url}/dashboard`);
    const link = execFileSync(binary, ["--config", path.join(dataDir, "depositd.toml"), "merchant", "invite",
      "--merchant", "Demo Shop", "--email", "dev@demo.example", "--role", "developer"], { cwd: root, encoding: "utf8" }).trim();
    assert.match(link, /\/dashboard\/invite\/[0-9a-f]{64}$/);

    const browser = await launch();
    fs.mkdirSync(artifacts, { recursive: true });
    for (const [width, label] of [[420, "phone"], [1280, "desktop"]]) {
      const context = await browser.newContext({ viewport: { width, height: 900 } });
      const page = await context.newPage();
      const problems = watchProblems(page, info);

      if (label === "phone") {
        // The invite: set a password, then sign in with it.
        await page.goto(link);
        assert.match(await page.textContent("h1"), /Welcome to Demo Shop/);
        await page.screenshot({ path: path.join(artifacts, `dashboard-invite-${label}.png`), fullPage: true });
        await page.fill("#password", "short");
        await page.click("button[type=submit]");
        assert.match(await page.textContent("#password-error"), /12 to 128 characters/);
        // That refusal is a 400 page, which Chromium logs as a failed load: expected, not a problem.
        problems.length = 0;
        await page.fill("#password", "a developer's long password");
        await page.click("button[type=submit]");
        await page.waitForSelector("text=Your password is set");
        await page.fill("#email", "dev@demo.example");
        await page.fill("#password", "a developer's long password");
      } else {
        // The ready login `depositd dev` printed.
        await page.goto(`${info.dashboard_url}/login`);
        await page.screenshot({ path: path.join(artifacts, `dashboard-login-${label}.png`), fullPage: true });
        await page.fill("#email", info.dashboard_email);
        await page.fill("#password", info.dashboard_password);
      }
      // Keyboard: Enter in the password field submits.
      await page.press("#password", "Enter");
      await page.waitForURL(`${info.dashboard_url}`);
      assert.match(await page.textContent("h1"), /Overview/);
      assert.match(await page.textContent("table"), /USDC/);
      await page.screenshot({ path: path.join(artifacts, `dashboard-overview-${label}.png`), fullPage: true });

      await page.click("nav a:has-text('API keys')");
      await page.fill("#name", `browser ${label}`);
      await page.check("input[name=mode][value=test]");
      await page.click("button:has-text('Create key')");
      const secret = await page.inputValue("#new-secret");
      assert.match(secret, /^dk_test_[0-9a-f]{48}$/);
      await page.screenshot({ path: path.join(artifacts, `dashboard-key-created-${label}.png`), fullPage: true });
      const listed = await page.textContent("table");
      assert.ok(listed.includes(`browser ${label}`) && listed.includes(secret.slice(0, 16)), listed);

      // The key works with the merchant API.
      const invoices = await fetch(`${info.api_url}/api/v1/invoices`, { headers: { "x-api-key": secret } });
      assert.equal(invoices.status, 200);

      await page.goto(`${info.dashboard_url}/developers/api-keys`);
      assert.equal(await page.locator("#new-secret").count(), 0, "the secret is shown once");
      assert.deepEqual(problems, [], "nothing blocked, nothing from another origin");
      await context.close();
    }
  }));
