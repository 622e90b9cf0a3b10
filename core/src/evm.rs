//! EVM primitives as the product needs them: address parsing with EIP-55 checks.

use alloy::primitives::Address;

/// Why a string is not an acceptable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("must be a 0x-prefixed 20-byte hex address")]
    Malformed,
    #[error("has mixed case but an invalid EIP-55 checksum (a typo?)")]
    BadChecksum,
    #[error("the zero address cannot receive funds")]
    Zero,
}

/// Parses an address the way wallets do: all-lowercase and all-uppercase hex are accepted,
/// mixed case must carry a valid EIP-55 checksum, and the zero address is refused (funds sent
/// there are burnt).
pub fn parse_address(s: &str) -> Result<Address, AddressError> {
    let hex = s.strip_prefix("0x").ok_or(AddressError::Malformed)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::Malformed);
    }
    let address: Address = s.parse().map_err(|_| AddressError::Malformed)?;
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper && address.to_checksum(None) != s {
        return Err(AddressError::BadChecksum);
    }
    if address.is_zero() {
        return Err(AddressError::Zero);
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_eip55() {
        // EIP-55's own examples.
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_ok());
        assert!(parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_ok());
        assert!(parse_address("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED").is_ok());
        assert_eq!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"), Err(AddressError::BadChecksum));
        assert_eq!(parse_address("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"), Err(AddressError::Malformed));
        assert_eq!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA"), Err(AddressError::Malformed));
        assert_eq!(parse_address("0x0000000000000000000000000000000000000000"), Err(AddressError::Zero));
    }
}
