// The checkout page in a real browser (Debian's Chromium, driven by playwright-core) against the
// real `depositd dev`: a payer opens the checkout URL, reads the amount and address from the page,
// pays with a real transfer on the dev chain, watches the page turn to paid (by its live stream,
// no reload, no polling) and is sent back to the shop; once the merchant refunds it, its page
// says refunded and stops asking; the page speaks the language asked for. Screenshots are saved
// to test-artifacts/.
//
// Run by `make test` after the Rust suite (which builds target/debug/depositd).
"use strict";
const { test } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const { root, until, withDev, payToken, payUsdc } = require("./support");

test("a payer opens the checkout page, pays, sees it paid and returns to the shop", { timeout: 300_000 }, () =>
  withDev("depositd-browser-", async ({ info, launch, defer }) => {
    const visits = [];
    const shop = http.createServer((req, res) => {
      visits.push(req.url);
      res.setHeader("content-type", "text/html");
      res.end("<h1>Thank you for your order</h1>");
    });
    await new Promise((r) => shop.listen(0, "127.0.0.1", r));
    defer(() => shop.close());
    const returnUrl = `http://127.0.0.1:${shop.address().port}/done`;
    const created = await fetch(`${info.api_url}/api/v1/invoices`, {
      method: "POST",
      headers: { "x-api-key": info.api_key, "content-type": "application/json" },
      body: JSON.stringify({ amount: "19.99", currency: "EUR", title: "Browser test order", return_url: returnUrl }),
    });
    assert.equal(created.status, 201);
    const invoice = await created.json();

    const browser = await launch();
    const page = await browser.newPage({ viewport: { width: 420, height: 900 } });
    const blocked = [];
    page.on("console", (message) => { if (message.type() === "error") blocked.push(message.text()); });
    const sessionCalls = [];
    page.on("request", (request) => {
      const url = new URL(request.url());
      if (url.pathname.startsWith("/api/v1/payments/")) sessionCalls.push(url.pathname);
    });
    await page.goto(invoice.checkout_url);
    assert.equal(await page.textContent("h1"), "Browser test order");
    await page.waitForSelector("#countdown:has-text('m ')");
    assert.match(await page.textContent("#status"), /Waiting for payment/);

    // What the payer reads off the page is what they pay.
    const address = await page.inputValue("#address");
    const amount = (await page.textContent("#amount-due")).trim();
    assert.equal(address, invoice.pay.address);
    assert.equal(amount, invoice.pay.amount);
    await payUsdc(info, address, amount, invoice.pay.decimals);

    await page.waitForSelector("#status.paid", { timeout: 60_000 });
    assert.match(await page.textContent("#status"), /Paid/);
    assert.equal(await page.isVisible("#address"), false, "nothing more to send: the address is hidden");
    fs.mkdirSync(path.join(root, "test-artifacts"), { recursive: true });
    await page.screenshot({ path: path.join(root, "test-artifacts", "checkout-paid.png"), fullPage: true });
    await page.waitForURL(/\/done\?invoice_id=/, { timeout: 15_000 });
    assert.deepEqual(visits.filter((v) => v !== "/favicon.ico"), [`/done?invoice_id=${invoice.id}`]);
    assert.deepEqual(blocked, [], "nothing was blocked by the Content-Security-Policy");
    // The page followed the live stream and never polled: the stream was up all along.
    assert.deepEqual(sessionCalls, [`/api/v1/payments/${invoice.id}/events`], JSON.stringify(sessionCalls));

    const api = (method, route, body, idempotencyKey) => fetch(`${info.api_url}${route}`, {
      method,
      headers: Object.assign({ "x-api-key": info.api_key, "content-type": "application/json" },
        idempotencyKey ? { "idempotency-key": idempotencyKey } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    const statusOf = async (id) => (await (await api("GET", `/api/v1/invoices/${id}`)).json());

    // A second order paid without the browser (the merchant's balance then covers a full refund
    // of the first, fee included); then the merchant refunds the first in full.
    const second = await (await api("POST", "/api/v1/invoices", { amount: "19.99", currency: "EUR" })).json();
    await payUsdc(info, second.pay.address, second.pay.amount, second.pay.decimals);
    await until("the second invoice paid", async () => (await statusOf(second.id)).status === "paid", 60_000);
    const first = await statusOf(invoice.id);
    const refund = await api("POST", `/api/v1/invoices/${invoice.id}/refunds`,
      { amount: first.amount_paid, address: info.payer_address }, `refund-${invoice.id}`);
    assert.equal(refund.status, 201, await refund.text());
    await until("the refund confirmed", async () => (await statusOf(invoice.id)).status === "refunded", 150_000);

    // The refunded invoice's page says so, shows nothing to pay, and stops asking.
    const refunded = await browser.newPage({ viewport: { width: 420, height: 900 } });
    const refundedCalls = [];
    refunded.on("request", (request) => {
      if (new URL(request.url()).pathname.startsWith("/api/v1/payments/")) refundedCalls.push(request.url());
    });
    await refunded.goto(invoice.checkout_url);
    assert.match(await refunded.textContent("#status.warn"), /refunded/);
    assert.equal(await refunded.isVisible("#address"), false);
    await refunded.waitForTimeout(4000);
    assert.deepEqual(refundedCalls, [], "a refunded invoice's page asks nothing more");
    await refunded.screenshot({ path: path.join(root, "test-artifacts", "checkout-refunded.png"), fullPage: true });

    // Languages: the switcher, ?lang=, and the browser's own language.
    const third = await (await api("POST", "/api/v1/invoices", { amount: "5", currency: "EUR" })).json();
    const german = await browser.newPage({ viewport: { width: 420, height: 900 } });
    await german.goto(`${third.checkout_url}?lang=de`);
    assert.equal(await german.getAttribute("html", "lang"), "de");
    await german.waitForSelector("#status:has-text('Warte auf Zahlung')");
    assert.match(await german.textContent(".token"), /^Senden Sie genau /);
    await german.screenshot({ path: path.join(root, "test-artifacts", "checkout-de.png"), fullPage: true });
    await german.click("nav.languages a[lang=es]");
    await german.waitForSelector("#status:has-text('Esperando el pago')");
    assert.equal(await german.getAttribute("html", "lang"), "es");
    const french = await (await browser.newContext({ locale: "fr-FR" })).newPage();
    await french.goto(third.checkout_url);
    assert.equal(await french.getAttribute("html", "lang"), "fr");
    await french.waitForSelector("#status:has-text('En attente du paiement')");
    assert.match(await french.textContent("#copy"), /Copier/);

    // Payment options: an invoice payable in USDC or USDT shows both until the payer picks one;
    // the payer picks USDT, pays what that option's block says, and the page turns paid by its
    // live stream, without a reload.
    const multi = await (await api("POST", "/api/v1/invoices", { amount: "7.5", currency: "EUR",
      payment_options: [{ asset: "USDC" }, { asset: "USDT" }] })).json();
    assert.equal(multi.payment_options.length, 2, JSON.stringify(multi));
    const options = await browser.newPage({ viewport: { width: 420, height: 1400 } });
    const optionErrors = [];
    options.on("console", (message) => { if (message.type() === "error") optionErrors.push(message.text()); });
    let navigations = 0;
    options.on("framenavigated", (frame) => { if (frame === options.mainFrame()) navigations += 1; });
    await options.goto(multi.checkout_url);
    await options.waitForSelector("#status:has-text('Waiting for payment')");
    assert.equal(await options.isVisible("#option-0"), true, "every option shows until one is picked");
    assert.equal(await options.isVisible("#option-1"), true);
    await options.click(".option-button[data-option='1']");
    assert.equal(await options.getAttribute(".option-button[data-option='1']", "aria-pressed"), "true");
    assert.equal(await options.isVisible("#option-0"), false, "the picked option alone shows");
    assert.equal(await options.isVisible("#option-1"), true);
    const usdt = multi.payment_options[1];
    assert.equal(usdt.asset, "USDT");
    const optionAddress = await options.inputValue("#address-1");
    const optionAmount = (await options.textContent("#amount-due-1")).trim();
    assert.equal(optionAddress, usdt.address);
    assert.equal(optionAmount, usdt.amount);
    assert.equal(await options.getAttribute("#wallet-link-1", "href"), usdt.payment_uri);
    await options.screenshot({ path: path.join(root, "test-artifacts", "checkout-options.png"), fullPage: true });
    // One USDT first: underpaid. The option's amount, wallet link and QR code now ask for the rest
    // (the QR code is fetched again from the server, for the new amount), without a reload.
    await payToken(info, "USDT", optionAddress, "1", usdt.decimals);
    await options.waitForSelector("#status.warn", { timeout: 60_000 });
    const underpaid = await statusOf(multi.id);
    const rest = underpaid.payment_options[1];
    assert.notEqual(rest.payment_uri, usdt.payment_uri, JSON.stringify(rest));
    await options.waitForSelector(`#qr-1 img[src*='/checkout/${multi.id}/qr?option=1']`);
    assert.equal(await options.getAttribute("#wallet-link-1", "href"), rest.payment_uri);
    assert.equal(await options.getAttribute("#qr-1", "data-uri"), rest.payment_uri);
    assert.ok(await options.$eval("#qr-1 img", (img) => img.complete && img.naturalWidth > 0), "the new QR code loaded");
    const restAmount = (await options.textContent("#amount-due-1")).trim();
    assert.equal(restAmount, rest.amount_due);
    await payToken(info, "USDT", optionAddress, restAmount, usdt.decimals);
    await options.waitForSelector("#status.paid", { timeout: 60_000 });
    assert.equal(navigations, 1, "the page was never reloaded");
    assert.equal(await options.isVisible("#address-1"), false, "nothing more to send");
    const paidMulti = await statusOf(multi.id);
    assert.equal(paidMulti.status, "paid");
    assert.equal(paidMulti.amount_paid, "7.5");
    assert.equal(paidMulti.payment_options[1].amount_paid, usdt.amount);
    // The QR endpoint: what the page swaps in is the image of that link; unknown ones are 404.
    const image = await fetch(`${info.api_url}/checkout/${multi.id}/qr?option=1`);
    assert.equal(image.headers.get("content-type"), "image/svg+xml");
    assert.match(await image.text(), /<svg/);
    assert.equal((await fetch(`${info.api_url}/checkout/${multi.id}/qr?option=2`)).status, 404);
    assert.equal((await fetch(`${info.api_url}/checkout/${multi.id}/qr?option=x`)).status, 404);
    assert.deepEqual(optionErrors, [], "nothing was blocked by the Content-Security-Policy");
  }));
