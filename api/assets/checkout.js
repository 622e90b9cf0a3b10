// depositd hosted checkout: follows the payer session API's live stream (server-sent events read
// with fetch, so the session travels in headers, never in a URL) and keeps the page current;
// while the stream is down it polls, and it reopens the stream with a growing pause.
// Same-origin only (the page's Content-Security-Policy allows nothing else). Its words come from
// the page's translation table (data-strings), in the page's language.
"use strict";
(function () {
  const main = document.getElementById("checkout");
  const invoice = main.dataset.invoice;
  const strings = JSON.parse(main.dataset.strings || "{}");
  const headers = { "x-session-token": main.dataset.token, "x-signature": main.dataset.signature };
  const base = "/api/v1/payments/" + invoice;
  const statusEl = document.getElementById("status");
  const nextEl = document.getElementById("next");
  const countdownEl = document.getElementById("countdown");
  let expiresAt = Number(main.dataset.expires) * 1000;
  let finished = false;
  let streaming = false;

  // The page's string for `key`, with each {name} replaced by values[name].
  function tr(key, values) {
    return (strings[key] || key).replace(/\{(\w+)\}/g, (whole, name) => (values && name in values ? values[name] : whole));
  }

  function show(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "status" + (kind ? " " + kind : "");
  }

  function withInvoice(url) {
    return url + (url.includes("?") ? "&" : "?") + "invoice_id=" + encodeURIComponent(invoice);
  }

  // Once the invoice is finished there is nothing more to send: hide the pay instructions.
  function closePayment() {
    document.querySelectorAll("[data-while-open]").forEach((el) => { el.hidden = true; });
  }

  function returnLink(url) {
    if (!url) return;
    nextEl.hidden = false;
    nextEl.replaceChildren();
    const link = document.createElement("a");
    link.href = withInvoice(url);
    link.textContent = tr("return_to_shop");
    nextEl.append(link);
  }

  // An invoice with several payment options: a button per option; picking one shows only its
  // address, QR code and link (until then every option shows). The choice stays in the page: a
  // payment to any offered option counts, so the server needs no word of it.
  const optionButtons = Array.from(document.querySelectorAll(".option-button"));
  function pick(index) {
    optionButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.option === index)));
    document.querySelectorAll("section.option").forEach((el) => { el.hidden = el.dataset.option !== index; });
  }
  optionButtons.forEach((b) => b.addEventListener("click", () => pick(b.dataset.option)));

  // An option's QR code and wallet link ask for what is due in it: when a payment changes that,
  // the link follows and the QR code is fetched again (drawn by the server, same origin).
  function followLink(index, uri, due, suffix) {
    const link = document.getElementById("wallet-link" + suffix);
    if (link) link.href = uri;
    const figure = document.getElementById("qr" + suffix);
    if (!figure || figure.dataset.uri === uri) return;
    figure.dataset.uri = uri;
    const image = document.createElement("img");
    image.alt = figure.getAttribute("aria-label") || "";
    image.width = 240;
    image.height = 240;
    image.src = "/checkout/" + encodeURIComponent(invoice) + "/qr?option=" + index + "&due=" + encodeURIComponent(due);
    figure.replaceChildren(image);
  }

  function render(s) {
    if (finished) return;
    expiresAt = s.expires_at * 1000;
    const amountDue = document.getElementById("amount-due");
    if (amountDue) amountDue.textContent = s.amount_due === "0" ? s.pay.amount : s.amount_due;
    (s.payment_options || []).forEach((o, i) => {
      if (optionButtons.length) {
        const amount = document.getElementById("amount-due-" + i);
        if (amount) amount.textContent = o.amount_due === "0" ? o.amount : o.amount_due;
        followLink(i, o.payment_uri, o.amount_due_base_units, "-" + i);
      } else if (i === 0) {
        followLink(0, o.payment_uri, o.amount_due_base_units, "");
      }
    });
    main.dataset.status = s.status;
    if (s.status === "paid") {
      finished = true;
      closePayment();
      show(tr("status_paid"), "paid");
      if (s.return_url) {
        nextEl.hidden = false;
        nextEl.textContent = tr("returning");
        setTimeout(() => { window.location.assign(withInvoice(s.return_url)); }, 1500);
      }
    } else if (s.status === "refunded") {
      finished = true;
      closePayment();
      show(tr("status_refunded"), "warn");
    } else if (s.status === "partially_refunded") {
      finished = true;
      closePayment();
      show(tr("status_partially_refunded"), "paid");
    } else if (s.status === "expired") {
      finished = true;
      closePayment();
      show(tr("status_expired"), "warn");
      returnLink(s.fail_url);
    } else if (s.status === "invalid") {
      // Marked invalid by the merchant: nothing more to pay here.
      finished = true;
      closePayment();
      show(tr("status_invalid"), "warn");
      returnLink(s.fail_url);
    } else if (s.status === "cancelled") {
      finished = true;
      closePayment();
      show(tr("status_cancelled"), "warn");
    } else if (s.status === "processing") {
      show(tr("status_confirmations", { n: s.confirmations, m: s.required_confirmations }));
    } else if (s.payment_flags.includes("underpaid")) {
      // With several options the amount due is in the invoice's currency.
      show(tr("status_underpaid", { amount: s.amount_due, asset: optionButtons.length ? s.currency : s.pay.asset }), "warn");
    } else {
      show(tr("status_waiting"));
    }
  }

  // One `text/event-stream` response: render every `session` event until it ends.
  async function follow() {
    const response = await fetch(base + "/events", { headers: headers, cache: "no-store" });
    if (!response.ok || !response.body) throw new Error("no stream: " + response.status);
    streaming = true;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
        if (data.length) render(JSON.parse(data.join("\n")));
      }
    }
  }

  // Keep a stream open until the invoice is finished; between streams, poll.
  async function live() {
    let pause = 1000;
    while (!finished) {
      const opened = Date.now();
      try { await follow(); } catch (_) { /* offline, or the server refused: poll meanwhile */ }
      streaming = false;
      if (finished) return;
      // A stream that lasted is a healthy one that ended (its lifetime, a restart): reopen soon.
      pause = Date.now() - opened > 30000 ? 1000 : Math.min(pause * 2, 30000);
      await poll();
      await new Promise((r) => setTimeout(r, pause));
    }
  }

  async function poll() {
    try {
      const response = await fetch(base, { headers: headers, cache: "no-store" });
      if (response.ok) render(await response.json());
    } catch (_) { /* offline for a moment: try again */ }
  }

  // While no stream is open (down, or being reopened), the page still moves every 3 s.
  function fallback() {
    if (finished) return;
    if (!streaming) poll();
    setTimeout(fallback, 3000);
  }

  function tick() {
    const left = Math.max(0, Math.floor((expiresAt - Date.now()) / 1000));
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    countdownEl.textContent = (h ? h + "h " : "") + m + "m " + String(s).padStart(2, "0") + "s";
    if (!finished) setTimeout(tick, 1000);
  }

  document.querySelectorAll("button[data-copy]").forEach((button) => button.addEventListener("click", async (event) => {
    const input = document.getElementById(button.dataset.copy);
    try { await navigator.clipboard.writeText(input.value); } catch (_) { input.select(); document.execCommand("copy"); }
    event.target.textContent = tr("copied");
    setTimeout(() => { event.target.textContent = tr("copy"); }, 1500);
  }));

  const form = document.getElementById("questions");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const answers = Array.from(form.querySelectorAll("input[name=answer]")).map((i) => i.value);
      const response = await fetch(base + "/answers", {
        method: "POST",
        headers: Object.assign({ "content-type": "application/json" }, headers),
        body: JSON.stringify({ answers: answers }),
      });
      const note = document.getElementById("questions-status");
      note.textContent = response.ok ? tr("answers_saved") : tr("answers_check");
    });
  }

  // A page served for a finished invoice shows its final words already: nothing to follow (a
  // paid one reads the session once, for the way back to the shop).
  if (main.dataset.status === "paid") {
    poll();
    return;
  }
  if (["refunded", "partially_refunded", "expired", "cancelled", "invalid"].includes(main.dataset.status)) {
    finished = true;
    closePayment();
    return;
  }
  tick();
  live();
  setTimeout(fallback, 3000);
})();
