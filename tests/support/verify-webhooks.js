// Verifies webhook deliveries with the official Standard Webhooks library (npm `standardwebhooks`),
// so the tests do not only check our signatures with our own code.
// stdin: [{"secret": "whsec_...", "headers": {"webhook-id": ..., ...}, "body": "..."}, ...]
// stdout: one entry per delivery: the verified payload's `type`, or "ERROR: <why>".
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(({ secret, headers, body }) => {
    try {
      return new Webhook(secret).verify(body, headers).type;
    } catch (error) {
      return `ERROR: ${error.message}`;
    }
  });
  process.stdout.write(JSON.stringify(results));
});
