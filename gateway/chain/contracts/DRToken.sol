// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Settlement token of the DR market.
/// @notice 3 decimals: one base unit is a milli-token (mtok). The operator sets the rate of the token
/// to the currency as milli-tokens per currency unit (1 currency = 1000 tokens -> 1_000_000).
contract DRToken is ERC20, AccessControl {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    /// Milli-tokens per one currency unit.
    uint256 public mtokPerCurrency;

    event RateSet(uint256 mtokPerCurrency);

    error RateZero();

    constructor(address operator, uint256 mtokPerCurrency_) ERC20("DR settlement token", "DRT") {
        _grantRole(DEFAULT_ADMIN_ROLE, operator);
        _grantRole(OPERATOR_ROLE, operator);
        _setRate(mtokPerCurrency_);
    }

    function decimals() public pure override returns (uint8) {
        return 3;
    }

    function setRate(uint256 mtokPerCurrency_) external onlyRole(OPERATOR_ROLE) {
        _setRate(mtokPerCurrency_);
    }

    function mint(address to, uint256 amount) external onlyRole(OPERATOR_ROLE) {
        _mint(to, amount);
    }

    function _setRate(uint256 mtokPerCurrency_) private {
        if (mtokPerCurrency_ == 0) revert RateZero();
        mtokPerCurrency = mtokPerCurrency_;
        emit RateSet(mtokPerCurrency_);
    }
}
