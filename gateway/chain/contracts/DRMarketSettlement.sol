// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {DRMarketBase} from "./DRMarketBase.sol";

/// @title The DR market's settlement, claims and views, run by DRMarket through DELEGATECALL.
/// @notice Deployed by DRMarket's constructor; never called directly (its own storage is unused).
/// Its functions are part of DRMarket's ABI (compile.js merges them into the DRMarket artifact).
contract DRMarketSettlement is DRMarketBase {
    using SafeERC20 for IERC20;

    constructor(IERC20 token_) DRMarketBase(token_) {}

    // ---- settle, check and claim -----------------------------------------------------------

    /// After the Report grace: take the window's payments from the treasury in one transfer.
    /// Each winner that reported is paid price x awarded W x window seconds / 3_600_000 (price:
    /// the clearing price, or its own under pay-as-bid), rounded down per bid. The amount pulled
    /// is that sum over every winner, rounded once (known since clearing, so a Report writes
    /// nothing window-wide); what is not paid (winners without a Report, the rounding) goes
    /// back to the treasury's balance when the last `settleBatch` checks the window.
    function settle(uint32 windowId) external onlyRole(OPERATOR_ROLE) {
        Window storage w = _requireState(windowId, W_SETTLED - 1);
        uint256 until = uint256(w.end) + config.reportGraceSeconds;
        if (block.timestamp < until) revert ReportGraceRunning(windowId, until);
        uint256 amount = uint256(w.payWeight) * (w.end - w.start) / 3_600_000;
        w.pulled = uint128(amount);
        w.state = W_SETTLED;
        if (amount > 0) token.safeTransferFrom(config.treasury, address(this), amount);
        emit WindowSettled(windowId, amount);
    }
    /// Verify and settle a batch of the window's eligible bids: payment of reporting winners,
    /// reputation, and each deposit refunded (winners that performed, losers) or forfeited; all
    /// accrue to balances that `claim` pays out. The batch that settles the last bid checks the
    /// window. A household performs when delivered Wh >= (1 - tolerance) x its awarded energy,
    /// compared exactly as delivered x 3600 x 10000 >= awardW x seconds x (10000 - tol).
    function settleBatch(uint32 windowId, uint32[] calldata bidIds) external onlyRole(OPERATOR_ROLE) {
        Window storage w = _requireState(windowId, W_SETTLED);
        uint256 seconds_ = w.end - w.start;
        uint256 need = seconds_ * (10_000 - config.toleranceBps);
        (uint256 paid, uint256 refunded, uint256 forfeited) = (0, 0, 0);
        for (uint256 i = 0; i < bidIds.length; ++i) {
            uint32 bidId = bidIds[i];
            Bid storage b = _bids[bidId];
            if (b.state != BID_CONSUMED || b.window != windowId) {
                revert BidNotSettleable(bidId, windowId);
            }
            b.state = BID_DONE;
            (uint256 pay, bool kept) = _settleBid(windowId, w, bidId, b, seconds_, need);
            paid += pay;
            if (kept) refunded += b.deposit;
            else forfeited += b.deposit;
        }
        w.paid += uint128(paid);
        w.refunded += uint128(refunded);
        w.forfeited += uint128(forfeited);
        w.settled += uint32(bidIds.length);
        if (w.settled == w.eligible) {
            w.state = W_CHECKED;
            --openWindows;
            _credit(config.treasury, w.pulled - w.paid);
            emit WindowChecked(windowId, w.refunded, w.forfeited);
        }
    }
    function _settleBid(uint32 windowId, Window storage w, uint32 bidId, Bid storage b,
        uint256 seconds_, uint256 need) internal returns (uint256 pay, bool kept)
    {
        address household = b.household;
        uint8 outcome;
        if (b.awardW > 0) {
            Take storage t = _takes[household][windowId];
            if (t.reported) {
                uint256 price = w.pricing == PAY_AS_BID ? b.priceMtok : w.clearingPrice;
                pay = price * b.awardW * seconds_ / 3_600_000;
                _credit(household, pay);
                emit BidPaid(windowId, bidId, household, pay);
            }
            outcome = _verdict(t, need);
            _rateHousehold(household, windowId, outcome);
        }
        kept = outcome == 0;
        if (kept) {
            _credit(household, b.deposit);
            emit DepositRefunded(windowId, bidId, household, b.deposit);
        } else {
            _credit(config.treasury, b.deposit);
            emit DepositForfeited(windowId, bidId, household, b.deposit);
        }
    }
    /// 0 performed, 1 reported short, 2 no Report: per household, against all its awarded W.
    function _verdict(Take storage t, uint256 need) internal view returns (uint8) {
        if (!t.reported) return 2;
        if (t.deliveredWh < 0) return 1;
        uint256 delivered = uint256(uint64(t.deliveredWh)) * 3600 * 10_000;
        return delivered >= uint256(t.awardW) * need ? 0 : 1;
    }
    /// Pay out `account`'s balance (payments, refunds, forfeits received); anyone may send it.
    function claim(address account) external returns (uint256 amount) {
        amount = claimable[account];
        if (amount == 0) return 0;
        claimable[account] = 0;
        token.safeTransfer(account, amount);
        emit Claimed(account, amount);
    }
    function bid(uint32 bidId) external view returns (Bid memory) {
        return _bids[bidId];
    }
    /// Bids [fromId, fromId + count) clipped to the bids placed: the operator's off-chain view.
    function bidRange(uint32 fromId, uint32 count) external view returns (Bid[] memory out) {
        uint256 end = uint256(fromId) + count;
        if (end > nextBidId) end = nextBidId;
        out = new Bid[](end > fromId ? end - fromId : 0);
        for (uint256 i = 0; i < out.length; ++i) out[i] = _bids[fromId + i];
    }
    /// The contract's judgement of bids [fromId, fromId + count) for `windowId` now (reason
    /// codes as in `_reason`: 0 eligible, 1-3 not passable, 4-8 to pass as ineligible).
    function reasons(uint32 windowId, uint32 fromId, uint32 count)
        external
        view
        returns (uint8[] memory out)
    {
        Window storage w = _windows[windowId];
        uint256 end = uint256(fromId) + count;
        if (end > nextBidId) end = nextBidId;
        out = new uint8[](end > fromId ? end - fromId : 0);
        for (uint256 i = 0; i < out.length; ++i) {
            uint32 id = uint32(fromId + i);
            out[i] = _reason(windowId, w, id, _bids[id]);
        }
    }
    function sealedHash(uint32 bidId) external view returns (bytes32) {
        return _sealed[bidId];
    }
    function window(uint32 windowId) external view returns (Window memory) {
        return _windows[windowId];
    }
    function take(address household, uint32 windowId) external view returns (Take memory) {
        return _takes[household][windowId];
    }
    function baseline(address household, uint32 windowId) external view returns (Commitment memory) {
        return _baselines[household][windowId];
    }
    /// The measurement Merkle root of the household's accepted Report for the window (0 if none).
    function reportRoot(address household, uint32 windowId) external view returns (bytes32) {
        return _reportRoots[household][windowId];
    }
    /// Whether `leaf` (a measurement's EIP-712 struct hash) is under the accepted Report's root;
    /// the tree is OpenZeppelin's sorted-pair tree (gateway/measurement/merkle.py).
    function verifyReading(address household, uint32 windowId, bytes32 leaf,
        bytes32[] calldata proof) external view returns (bool)
    {
        bytes32 root = _reportRoots[household][windowId];
        return root != bytes32(0) && MerkleProof.verifyCalldata(proof, root, leaf);
    }

    function reportDigest(Report calldata r) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REPORT_TYPEHASH, r)));
    }

    function baselineDigest(Baseline calldata c) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(BASELINE_TYPEHASH, c)));
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }
}
