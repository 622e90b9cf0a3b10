// The dashboard's Webhooks and Events pages in a real browser (Debian's Chromium, driven by
// playwright-core) against the real `depositd dev`, signed in with the demo login it prints: add
// an endpoint pointing at a small HTTP server of this test, send it a test event, see the
// delivery with its status code in the event log, redeliver it, and see the receiver got it
// twice (the same event id, signed). Screenshots at phone and desktop width go to test-artifacts/.
//
// Run by `make test` after the Rust suite (which builds target/debug/depositd).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { artifacts, until, withDev, demoOwnerPage, receiver } = require("./support");

/// Whether a hit carries a Standard Webhooks signature by `secret`.
function signedWith(hit, secret) {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const signed = `${hit.headers["webhook-id"]}.${hit.headers["webhook-timestamp"]}.${hit.body}`;
  const expected = "v1," + crypto.createHmac("sha256", key).update(signed).digest("base64");
  return hit.headers["webhook-signature"].split(" ").includes(expected);
}

test("a developer adds a webhook endpoint, sends a test event and redelivers it", { timeout: 300_000 }, () =>
  withDev("depositd-dashboard-dev-", async ({ info, launch, defer }) => {
    const hooks = await receiver("ok <received>");
    defer(() => hooks.server.close());
    const browser = await launch();
    fs.mkdirSync(artifacts, { recursive: true });
    for (const [width, label] of [[420, "phone"], [1280, "desktop"]]) {
      const { context, page, problems } = await demoOwnerPage(browser, info, { viewport: { width, height: 900 } });

      // Add an endpoint that receives only test events' kin: a type the demo never emits by itself.
      await page.click("nav a:has-text('Webhooks')");
      assert.match(await page.textContent("h1"), /Webhook endpoints/);
      const url = `http://127.0.0.1:${hooks.port}/${label}`;
      await page.fill("#url", url);
      await page.fill("#description", `browser ${label}`);
      await page.check("input[name=event][value='payout.failed']");
      await page.click("button:has-text('Add endpoint')");
      const secret = await page.inputValue("#new-secret");
      assert.match(secret, /^whsec_/);
      await page.screenshot({ path: path.join(artifacts, `dashboard-webhooks-${label}.png`), fullPage: true });
      await page.click(`table a:has-text('${url}')`);
      assert.equal(await page.locator("#new-secret").count(), 0, "the secret is shown once");
      await page.screenshot({ path: path.join(artifacts, `dashboard-webhook-${label}.png`), fullPage: true });

      // A test event: its page shows the delivery, with status 200 once the worker sent it.
      const before = hooks.hits.length;
      await page.click("button:has-text('Send a test event')");
      await page.waitForURL(/\/dashboard\/developers\/events\/[0-9a-f-]{36}$/);
      const eventId = page.url().split("/").pop();
      await until("the test delivery", async () => {
        await page.reload();
        return (await page.locator("td.status-code:has-text('200')").count()) === 1;
      }, 30_000);
      assert.match(await page.textContent("h1"), /webhook_endpoint\.test/);
      assert.match(await page.textContent(".attempts"), /ok <received>/, "the answer's start, escaped");
      await page.screenshot({ path: path.join(artifacts, `dashboard-event-${label}.png`), fullPage: true });

      // Redeliver: a second attempt, and the receiver has it twice.
      await page.click("button:has-text('Redeliver')");
      await until("the redelivery", async () => {
        await page.reload();
        return (await page.locator("td.status-code:has-text('200')").count()) === 2;
      }, 30_000);
      const mine = hooks.hits.slice(before).filter((h) => h.path === `/${label}`);
      assert.equal(mine.length, 2, "the receiver got the test event twice");
      for (const hit of mine) {
        assert.equal(hit.headers["webhook-id"], eventId);
        assert.equal(JSON.parse(hit.body).type, "webhook_endpoint.test");
        assert.ok(signedWith(hit, secret), "signed with the endpoint's secret");
      }
      assert.ok(!signedWith(mine[0], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "the check can fail");

      // The event log lists it, and what the member did.
      await page.click("nav a:has-text('Events')");
      assert.ok((await page.textContent("main")).includes(eventId));
      assert.match(await page.textContent("main"), /\(owner\) did webhook_endpoint\.create/);
      await page.screenshot({ path: path.join(artifacts, `dashboard-events-${label}.png`), fullPage: true });
      await page.click("nav a:has-text('Settings')");
      assert.match(await page.textContent("h1"), /Settings/);
      await page.screenshot({ path: path.join(artifacts, `dashboard-settings-${label}.png`), fullPage: true });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
      assert.equal(overflow, false, `the settings page fits ${width} px`);
      assert.deepEqual(problems, [], "nothing blocked, nothing from another origin");
      await context.close();
    }
  }));
