// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title OddTransferToken
/// @notice TEST ONLY. Emits ERC-20 `Transfer` logs whose data is not one 32-byte uint256, as a
/// broken or hostile token might, so tests can check that the watcher records such a transfer as
/// rejected (with a reason and an alert metric) instead of crashing or guessing an amount.
/// Never deploy it to a real chain.
contract OddTransferToken {
    bytes32 private constant TRANSFER_TOPIC = keccak256("Transfer(address,address,uint256)");

    /// Emits `Transfer(msg.sender, to, ...)` with 64 bytes of data instead of 32.
    function emitOddTransfer(address to) external {
        bytes32 topic = TRANSFER_TOPIC;
        address from = msg.sender;
        assembly {
            mstore(0, 1)
            mstore(32, 2)
            log3(0, 64, topic, from, to)
        }
    }
}
