// What the browser tests share: the paths, running a test against a fresh `depositd dev` with
// Debian's Chromium at hand (skipped without it, failed instead when CI is set), paying from the
// dev payer on anvil, signing in as the demo owner, watching a page for problems, a webhook
// receiver.
//
// Not a test itself: `node --test tests/browser/` runs only the *.test.js files.
"use strict";
const assert = require("node:assert/strict");
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { chromium } = require("playwright-core");

/// The repository's root.
const root = path.resolve(__dirname, "..", "..");
/// The Chromium the tests drive (CHROMIUM overrides Debian's).
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
/// The binary `make test` builds before the browser tests.
const binary = path.join(root, "target", "debug", "depositd");
/// Where the screenshots go.
const artifacts = path.join(root, "test-artifacts");

/// A TCP port free on 127.0.0.1 just now.
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

/// `check()`'s first truthy value, asked every `intervalMs` (a throw counts as not yet); fails
/// naming `what` after `timeoutMs`.
async function until(what, check, timeoutMs, intervalMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/// Whether the browser test can run: false (after saying so) when there is no Chromium, which
/// fails the test instead when CI is set.
function chromiumPresent() {
  if (!fs.existsSync(chromiumPath)) {
    assert.ok(!process.env.CI, `CI is set but ${chromiumPath} is missing (.ci/run installs Debian's chromium)`);
    console.log(`*** SKIPPING the browser test: no Chromium at ${chromiumPath} ***`);
    return false;
  }
  return true;
}

/// Runs a browser test's `body({ info, dataDir, launch, defer })` against a fresh `depositd dev`
/// on free ports (its data directory a new temporary one named `prefix`...), once its dev.json is
/// written and /healthz answers (within 90 s); `info` is that dev.json, `launch()` starts
/// Chromium (headless, the same flags for every test), `defer(fn)` has `fn` run at the end. At the
/// end, whatever happened: Chromium closed, the daemon stopped, then the deferred. Without
/// Chromium the test is skipped (failed when CI is set).
async function withDev(prefix, body) {
  if (!chromiumPresent()) return;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const [apiPort, anvilPort] = [await freePort(), await freePort()];
  const daemon = spawn(
    binary,
    ["dev", "--data-dir", dataDir, "--api-port", String(apiPort), "--anvil-port", String(anvilPort)],
    { cwd: root, stdio: "ignore" },
  );
  let browser;
  const deferred = [];
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
    const launch = async () => {
      browser = await chromium.launch({
        executablePath: chromiumPath,
        args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync"],
      });
      return browser;
    };
    await body({ info, dataDir, launch, defer: (fn) => deferred.push(fn) });
  } finally {
    if (browser) await browser.close();
    daemon.kill("SIGINT");
    for (const fn of deferred) await fn();
  }
}

/// "21.5892" with 6 decimals -> 21589200n.
function toBaseUnits(display, decimals) {
  const [whole, fraction = ""] = display.split(".");
  return BigInt(whole + fraction.padEnd(decimals, "0").slice(0, decimals));
}

/// Sends `baseUnits` of the dev token `symbol` from the dev payer to `address` (an ERC-20
/// transfer by eth_sendTransaction on anvil); the tx hash.
async function transferToken(info, symbol, address, baseUnits) {
  const data = "0xa9059cbb" + address.slice(2).toLowerCase().padStart(64, "0") +
    BigInt(baseUnits).toString(16).padStart(64, "0");
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

/// Sends `amount` (display units, `decimals` of them) of the dev token `symbol` from the payer to
/// `address`; the tx hash.
function payToken(info, symbol, address, amount, decimals) {
  return transferToken(info, symbol, address, toBaseUnits(amount, decimals));
}

/// Sends `amount` (display units) of the dev USDC from the payer to `address`; the tx hash.
function payUsdc(info, address, amount, decimals) {
  return payToken(info, "USDC", address, amount, decimals);
}

/// The merchant API with the demo key of `info`: `(method, route, body)` -> `{ status, body }`.
function demoApi(info) {
  return (method, route, body) => fetch(`${info.api_url}${route}`, {
    method,
    headers: { "x-api-key": info.api_key, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  }).then(async (r) => ({ status: r.status, body: await r.json() }));
}

/// Collects into `problems` (returned) the page's console errors and its requests that leave
/// the API's origin.
function watchProblems(page, info, problems = []) {
  page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
  page.on("request", (request) => {
    if (!request.url().startsWith(info.api_url) && !request.url().startsWith("data:")) problems.push(request.url());
  });
  return problems;
}

/// A page in a fresh browser context (`options`: its viewport...), its problems collected into
/// `problems` (see `watchProblems`), signed in as the demo owner: `{ context, page, problems }`.
async function demoOwnerPage(browser, info, options, problems = []) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  watchProblems(page, info, problems);
  await signInAsDemoOwner(page, info);
  return { context, page, problems };
}

/// Signs `page` in with the demo owner login `depositd dev` printed, and waits for the overview.
async function signInAsDemoOwner(page, info) {
  await page.goto(`${info.dashboard_url}/login`);
  await page.fill("#email", info.dashboard_email);
  await page.fill("#password", info.dashboard_password);
  await page.press("#password", "Enter");
  await page.waitForURL(`${info.dashboard_url}`);
}

/// A webhook receiver on 127.0.0.1 that records every request (`{ path, headers, body }` in
/// `hits`) and answers 200 with `answer`: `{ server, hits, port }`.
function receiver(answer) {
  const hits = [];
  const server = http.createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => { body += chunk; });
    request.on("end", () => {
      hits.push({ path: request.url, headers: request.headers, body });
      response.writeHead(200, { "content-type": "text/plain" });
      response.end(answer);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({ server, hits, port: server.address().port }));
  });
}

module.exports = {
  root, binary, artifacts, until, withDev,
  transferToken, payToken, payUsdc, demoApi,
  watchProblems, demoOwnerPage, receiver,
};
