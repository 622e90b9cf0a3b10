"""Schemathesis hooks for depositd's OpenAPI document (loaded through SCHEMATHESIS_HOOKS).

`evm-address` is a 0x address whose mixed case must be a valid EIP-55 checksum, which no
pattern can state: generated addresses are lowercase (also valid), never the zero address.
"""

from hypothesis import strategies as st

import schemathesis

schemathesis.openapi.format(
    "evm-address",
    st.from_regex(r"\A0x[0-9a-f]{40}\Z").filter(lambda address: address != "0x" + "0" * 40),
)


@schemathesis.hook
def filter_body(ctx, body):
    """Checkout questions are at most 512 bytes in all (seed 001), a sum no schema can state: a
    body whose questions are each short enough but together too long is not schema-valid data."""
    if not isinstance(body, dict) or not isinstance(body.get("questions"), list):
        return True
    questions = body["questions"]
    if not all(isinstance(q, str) for q in questions):
        return True
    return sum(len(q.encode("utf-8")) for q in questions) <= 512
