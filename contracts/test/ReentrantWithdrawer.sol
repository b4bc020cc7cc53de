// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

interface IWithdraw {
    function withdraw() external;
}

/// @notice Test-only member contract: on receiving its reward it tries to withdraw again
/// (a reentrancy attack), or refuses the payment outright when `rejectPayments` is set.
contract ReentrantWithdrawer {
    IWithdraw public immutable target;
    bool public rejectPayments;
    uint256 public received;
    uint256 public payments;
    bytes public reentryError;

    constructor(address target_) {
        target = IWithdraw(target_);
    }

    function setRejectPayments(bool reject) external {
        rejectPayments = reject;
    }

    function attack() external {
        target.withdraw();
    }

    receive() external payable {
        if (rejectPayments) revert("payment rejected");
        received += msg.value;
        payments += 1;
        if (payments == 1) {
            try target.withdraw() {} catch (bytes memory err) {
                reentryError = err;
            }
        }
    }
}
