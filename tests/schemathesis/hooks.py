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
