// depositd hosted checkout: polls the payer session API and keeps the page current.
// Same-origin only (the page's Content-Security-Policy allows nothing else).
"use strict";
(function () {
  const main = document.getElementById("checkout");
  const invoice = main.dataset.invoice;
  const headers = { "x-session-token": main.dataset.token, "x-signature": main.dataset.signature };
  const statusEl = document.getElementById("status");
  const nextEl = document.getElementById("next");
  const countdownEl = document.getElementById("countdown");
  let expiresAt = Number(main.dataset.expires) * 1000;
  let finished = false;

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

  function render(s) {
    expiresAt = s.expires_at * 1000;
    document.getElementById("amount-due").textContent = s.amount_due === "0" ? s.pay.amount : s.amount_due;
    if (s.status === "paid") {
      finished = true;
      closePayment();
      show("Paid. Thank you!", "paid");
      if (s.return_url) {
        nextEl.hidden = false;
        nextEl.textContent = "Taking you back to the shop...";
        setTimeout(() => { window.location.assign(withInvoice(s.return_url)); }, 1500);
      }
    } else if (s.status === "expired") {
      finished = true;
      closePayment();
      show("This payment request has expired.", "warn");
      if (s.fail_url) {
        nextEl.hidden = false;
        nextEl.replaceChildren();
        const link = document.createElement("a");
        link.href = withInvoice(s.fail_url);
        link.textContent = "Return to the shop";
        nextEl.append(link);
      }
    } else if (s.status === "invalid") {
      // Marked invalid by the merchant: nothing more to pay here.
      finished = true;
      closePayment();
      show("This payment request is no longer valid.", "warn");
      if (s.fail_url) {
        nextEl.hidden = false;
        nextEl.replaceChildren();
        const link = document.createElement("a");
        link.href = withInvoice(s.fail_url);
        link.textContent = "Return to the shop";
        nextEl.append(link);
      }
    } else if (s.status === "cancelled") {
      finished = true;
      closePayment();
      show("This payment request was cancelled.", "warn");
    } else if (s.status === "processing") {
      show("Payment detected: " + s.confirmations + " of " + s.required_confirmations + " confirmations.");
    } else if (s.payment_flags.includes("underpaid")) {
      show("Underpaid: send " + s.amount_due + " " + s.pay.asset + " more.", "warn");
    } else {
      show("Waiting for payment...");
    }
  }

  async function poll() {
    try {
      const response = await fetch("/api/v1/payments/" + invoice, { headers: headers, cache: "no-store" });
      if (response.ok) render(await response.json());
    } catch (_) { /* offline for a moment: try again */ }
    if (!finished) setTimeout(poll, 3000);
  }

  function tick() {
    const left = Math.max(0, Math.floor((expiresAt - Date.now()) / 1000));
    const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    countdownEl.textContent = (h ? h + "h " : "") + m + "m " + String(s).padStart(2, "0") + "s";
    if (!finished) setTimeout(tick, 1000);
  }

  document.getElementById("copy").addEventListener("click", async (event) => {
    const input = document.getElementById("address");
    try { await navigator.clipboard.writeText(input.value); } catch (_) { input.select(); document.execCommand("copy"); }
    event.target.textContent = "Copied";
    setTimeout(() => { event.target.textContent = "Copy"; }, 1500);
  });

  const form = document.getElementById("questions");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const answers = Array.from(form.querySelectorAll("input[name=answer]")).map((i) => i.value);
      const response = await fetch("/api/v1/payments/" + invoice + "/answers", {
        method: "POST",
        headers: Object.assign({ "content-type": "application/json" }, headers),
        body: JSON.stringify({ answers: answers }),
      });
      const note = document.getElementById("questions-status");
      note.textContent = response.ok ? "Thank you, your answers are saved." : "Please check your answers.";
    });
  }

  tick();
  poll();
})();
