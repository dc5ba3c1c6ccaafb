// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {DRMarketBase} from "./DRMarketBase.sol";
import {DRMarketSettlement} from "./DRMarketSettlement.sol";
import {DRToken} from "./DRToken.sol";

/// @title Residential demand-response market: bids, windows, clearing, Reports, settlement, check.
/// @notice Units (docs/market.md): power in W (signed: negative = reduce load), energy in Wh,
/// time in unix seconds, money in milli-tokens (mtok, the token's base unit), prices in mtok/kWh,
/// currency prices in micro-currency/kWh, omega in mtok/kWh per kW, tolerance in basis points.
/// Energies are signed (int64 Wh): a household that exports during a window reports a negative
/// actual energy. Every division rounds toward zero (all operands are non-negative).
/// Programme scale (issue 14): no transaction loops over all bids. The operator sorts off chain and
/// submits the merit order in batches that the contract verifies in O(n) (`clearBatch`,
/// `finishClearing`); settlement pulls the window's payments once and settles bids in batches
/// into per-address balances that each household claims (`settle`, `settleBatch`, `claim`).
/// Settlement, claims and the views live in DRMarketSettlement (same storage, DELEGATECALL).
contract DRMarket is DRMarketBase {
    using SafeERC20 for IERC20;

    /// The settlement extension this market created; unknown selectors are delegated to it.
    address public immutable extension;

    constructor(address operator, IERC20 token_, Config memory config_, Reputation memory rules)
        DRMarketBase(token_)
    {
        if (operator == address(0)) revert ZeroAddress("operator");
        extension = address(new DRMarketSettlement(token_));
        _grantRole(DEFAULT_ADMIN_ROLE, operator);
        _grantRole(OPERATOR_ROLE, operator);
        _setConfig(config_);
        _setReputationRules(rules);
    }

    // ---- configuration ---------------------------------------------------------------------

    function setConfig(Config calldata config_, Reputation calldata rules)
        external
        onlyRole(OPERATOR_ROLE)
    {
        if (openWindows != 0) {
            revert WindowInProgress(windowCount, _windows[windowCount].state);
        }
        _setConfig(config_);
        _setReputationRules(rules);
    }

    function _setConfig(Config memory c) private {
        if (c.treasury == address(0)) revert ZeroAddress("treasury");
        if (c.toleranceBps > 10_000) revert ToleranceInvalid(c.toleranceBps);
        config = c;
        emit ConfigSet(c.treasury, c.depositPerKw, c.toleranceBps, c.lockoutSeconds,
            c.reportGraceSeconds);
    }

    // ---- bids ------------------------------------------------------------------------------

    /// A household offers `powerW` (negative = reduce load) over [fromTs, toTs] at `priceMtok`
    /// per kWh and escrows depositPerKw x ratedW / 1000 mtok (the caller must approve it first).
    function placeBid(uint40 fromTs, uint40 toTs, int32 powerW, uint32 ratedW, uint64 priceMtok)
        external
        returns (uint32 bidId)
    {
        if (!_households[msg.sender].registered) revert NotHousehold(msg.sender);
        return _placeBid(msg.sender, fromTs, toTs, powerW, ratedW, priceMtok);
    }

    /// The same bid placed for `household` by the household itself or by its registered gateway.
    /// The deposit is pulled from the household's wallet, so the allowance the household gave the
    /// market is the hard cap of what its gateway can put at risk; refunds go to the household.
    function placeBidFor(
        address household,
        uint40 fromTs,
        uint40 toTs,
        int32 powerW,
        uint32 ratedW,
        uint64 priceMtok
    ) external returns (uint32 bidId) {
        _requireHouseholdOrGateway(household);
        return _placeBid(household, fromTs, toTs, powerW, ratedW, priceMtok);
    }

    function _placeBid(
        address household,
        uint40 fromTs,
        uint40 toTs,
        int32 powerW,
        uint32 ratedW,
        uint64 priceMtok
    ) private returns (uint32 bidId) {
        uint256 magnitude = _checkTerms(fromTs, toTs, powerW);
        if (ratedW < magnitude || ratedW > uint256(MAX_POWER_W)) revert RatedPowerInvalid(ratedW, powerW);
        uint96 deposit = _depositFor(ratedW);
        bidId = nextBidId++;
        _bids[bidId] = Bid(household, powerW, 0, BID_OPEN, 0, fromTs, toTs, priceMtok, deposit);
        ++liveBids;
        if (deposit > 0) token.safeTransferFrom(household, address(this), deposit);
        emit BidPlaced(bidId, household, fromTs, toTs, powerW, ratedW, priceMtok, deposit);
    }

    function _checkTerms(uint40 fromTs, uint40 toTs, int32 powerW) private pure returns (uint256) {
        if (toTs <= fromTs) revert BidRangeInvalid(fromTs, toTs);
        if (powerW == 0 || powerW > MAX_POWER_W || powerW < -MAX_POWER_W) {
            revert BidPowerInvalid(powerW);
        }
        return _magnitude(powerW);
    }

    function _depositFor(uint256 ratedW) private view returns (uint96) {
        return uint96(uint256(config.depositPerKw) * ratedW / 1000);
    }

    /// Sealed bid (seed 002): only keccak256(abi.encode(priceMtok, powerW, fromTs, toTs, salt,
    /// household)) and the deposit for `ratedW` are public until the reveal. Its bid id (and so its
    /// place among equal prices and its window) is fixed now; it takes part in the first window
    /// announced after it, if revealed in that window's reveal phase (`revealBid`).
    function commitBid(bytes32 hash, uint32 ratedW) external returns (uint32) {
        if (!_households[msg.sender].registered) revert NotHousehold(msg.sender);
        return _commitBid(msg.sender, hash, ratedW);
    }

    function commitBidFor(address household, bytes32 hash, uint32 ratedW) external returns (uint32) {
        _requireHouseholdOrGateway(household);
        return _commitBid(household, hash, ratedW);
    }

    function _commitBid(address household, bytes32 hash, uint32 ratedW)
        private
        returns (uint32 bidId)
    {
        if (ratedW == 0 || ratedW > uint256(MAX_POWER_W)) revert RatedPowerInvalid(ratedW, 0);
        uint96 deposit = _depositFor(ratedW);
        bidId = nextBidId++;
        _bids[bidId] = Bid(household, 0, 0, BID_SEALED, 0, 0, 0, 0, deposit);
        _sealed[bidId] = hash;
        ++liveBids;
        if (deposit > 0) token.safeTransferFrom(household, address(this), deposit);
        emit BidCommitted(bidId, household, hash, ratedW, deposit);
    }

    /// Open a sealed bid, by its household or the household's gateway, during the reveal phase of
    /// the first window that covers it: from that window's announcement until its `revealEnd`.
    /// The deposit paid at commitment must cover the revealed power (depositPerKw x |powerW|).
    function revealBid(uint32 bidId, uint40 fromTs, uint40 toTs, int32 powerW, uint64 priceMtok,
        bytes32 salt) external
    {
        Bid storage b = _bids[bidId];
        address owner = _requireOwner(bidId, b);
        if (b.state != BID_SEALED) revert BidNotOpen(bidId, b.state);
        _requireRevealPhase(bidId);
        if (keccak256(abi.encode(priceMtok, powerW, fromTs, toTs, salt, owner)) != _sealed[bidId]) {
            revert CommitmentMismatch(bidId);
        }
        uint256 needed = uint256(_depositFor(_checkTerms(fromTs, toTs, powerW)));
        if (needed > b.deposit) revert DepositTooSmall(bidId, needed, b.deposit);
        (b.powerW, b.state, b.fromTs, b.toTs, b.priceMtok) = (powerW, BID_OPEN, fromTs, toTs,
            priceMtok);
        delete _sealed[bidId];
        emit BidRevealed(bidId, owner, fromTs, toTs, powerW, priceMtok);
    }

    /// The covering window is the first not yet cleared whose cutoff is above the bid id.
    function _requireRevealPhase(uint32 bidId) private view {
        for (uint32 k = nextToClear; k <= windowCount; ++k) {
            Window storage w = _windows[k];
            if (bidId >= w.cutoff) continue;
            if (w.state != W_ANNOUNCED || block.timestamp >= w.revealEnd) {
                revert RevealClosed(bidId, w.revealEnd);
            }
            return;
        }
        revert RevealNotOpen(bidId);
    }

    function _requireHouseholdOrGateway(address household) private view {
        Household storage h = _households[household];
        if (!h.registered) revert NotHousehold(household);
        if (msg.sender != household && msg.sender != h.gateway) {
            revert NotHouseholdOrGateway(msg.sender, household);
        }
    }

    function _requireOwner(uint32 bidId, Bid storage b) private view returns (address owner) {
        owner = b.household;
        if (owner == address(0)) revert UnknownBid(bidId);
        if (owner != msg.sender && _households[owner].gateway != msg.sender) {
            revert NotBidOwner(bidId, owner);
        }
    }

    /// An open or sealed bid that no announced window may still clear can be withdrawn with its
    /// deposit, by its household or the household's gateway; the deposit goes to the household.
    function withdrawBid(uint32 bidId) external {
        Bid storage b = _bids[bidId];
        address owner = _requireOwner(bidId, b);
        if (b.state != BID_OPEN && b.state != BID_SEALED) revert BidNotOpen(bidId, b.state);
        Window storage w = _windows[windowCount];
        if ((w.state == W_ANNOUNCED || w.state == W_CLEARING) && bidId < w.cutoff) {
            revert BidLocked(bidId, windowCount);
        }
        b.state = BID_WITHDRAWN;
        --liveBids;
        if (b.deposit > 0) token.safeTransfer(owner, b.deposit);
        emit BidWithdrawn(bidId, owner, b.deposit);
    }

    // ---- window: announce and clear ---------------------------------------------------------

    /// Announce a DR window at least lockoutSeconds ahead and after the end of the last announced
    /// one (windows never overlap; several may be announced ahead). Prices in micro-currency/kWh;
    /// omega in mtok/kWh per kW. `revealSeconds` after now the reveal phase of sealed bids ends and
    /// clearing may start (0: at once).
    function announce(
        uint40 start,
        uint40 end,
        uint64 retailMicro,
        uint64 realtimeMicro,
        uint32 omegaMilli,
        uint8 mode,
        uint8 pricing,
        uint32 revealSeconds
    ) external onlyRole(OPERATOR_ROLE) returns (uint32 windowId) {
        if (end <= start) revert WindowRangeInvalid(start, end);
        uint256 earliest = block.timestamp + config.lockoutSeconds;
        if (start < earliest) revert LockoutViolated(start, earliest);
        Window storage last = _windows[windowCount];
        if (last.state != 0 && last.state != W_VOID && start < last.end) {
            revert WindowOverlap(start, last.end);
        }
        if (mode > 1) revert ModeInvalid(mode);
        if (pricing > PAY_AS_BID) revert PricingInvalid(pricing);
        if (omegaMilli == 0) revert OmegaZero();
        uint256 revealEnd = block.timestamp + revealSeconds;
        if (revealEnd >= start) revert RevealTooLong(revealEnd, start);
        windowId = ++windowCount;
        ++openWindows;
        Window storage w = _windows[windowId];
        (w.start, w.end, w.cutoff, w.state, w.mode, w.pricing) = (start, end, nextBidId, W_ANNOUNCED,
            mode, pricing);
        (w.omegaMilli, w.announcedAt, w.revealEnd) = (omegaMilli, uint40(block.timestamp),
            uint40(revealEnd));
        (w.liveAtAnnounce, w.consumedAtAnnounce) = (liveBids, consumedTotal);
        _setTarget(w, retailMicro, realtimeMicro);
        emit WindowAnnounced(windowId, start, end, w.cutoff, w.reduce, w.spreadMtok, w.dEcMtok,
            w.optimumW, pricing, w.revealEnd);
    }

    /// spread = |realtime - retail| x rate / 1e6; dEc = retail x rate / 1e6 when curtailing, else 0;
    /// optimumW = (dEc + spread) x 1000 / (2 x omegaMilli). All in mtok/kWh, rounded down.
    function _setTarget(Window storage w, uint64 retailMicro, uint64 realtimeMicro) private {
        uint256 rate = DRToken(address(token)).mtokPerCurrency();
        bool curtail = w.mode == 1;
        uint256 diff = realtimeMicro >= retailMicro
            ? realtimeMicro - retailMicro
            : retailMicro - realtimeMicro;
        uint256 spread = diff * rate / 1e6;
        uint256 dEc = curtail ? uint256(retailMicro) * rate / 1e6 : 0;
        uint256 optimum = (spread + dEc) * 1000 / (2 * uint256(w.omegaMilli));
        if (optimum > type(uint32).max) optimum = type(uint32).max;
        w.reduce = curtail || realtimeMicro >= retailMicro;
        w.spreadMtok = uint64(spread);
        w.dEcMtok = uint64(dEc);
        w.optimumW = uint32(optimum);
    }

    /// One batch of a window's clearing, sorted off chain by the operator. `meritOrder` continues
    /// the eligible bids in strictly increasing (price, bid id) across batches; each is awarded
    /// greedily toward the optimum (the last one partially). `ineligible` are live bids placed
    /// before the announcement that cannot take part (direction, range, suspension, unrevealed);
    /// an unrevealed sealed bid is refunded minus UNREVEALED_PENALTY_BPS here. Every bid is checked
    /// once: a wrong order, a repeated bid or an eligible bid passed as ineligible reverts.
    function clearBatch(uint32 windowId, uint32[] calldata meritOrder, uint32[] calldata ineligible)
        external
        onlyRole(OPERATOR_ROLE)
    {
        Window storage w = _windows[windowId];
        if (!_clearing(windowId, w)) return;
        _passEligible(windowId, w, meritOrder);
        _passIneligible(windowId, w, ineligible);
        w.passed += uint32(meritOrder.length + ineligible.length);
    }

    /// Close the clearing once every live bid placed before the announcement was passed: O(1),
    /// as the live bids at announcement minus those that earlier windows consumed since (a bid
    /// placed before the announcement can be neither withdrawn nor added meanwhile).
    function finishClearing(uint32 windowId) external onlyRole(OPERATOR_ROLE) {
        Window storage w = _windows[windowId];
        if (!_clearing(windowId, w)) return;
        uint256 expected = w.liveAtAnnounce - (consumedTotal - w.consumedAtAnnounce - w.unrevealed);
        if (w.passed != expected) revert BidsNotPassed(windowId, expected, w.passed);
        if (w.eligible == 0) return _void(windowId, w, VOID_NO_ELIGIBLE_BIDS);
        w.state = W_CLEARED;
        if (w.pricing == UNIFORM) w.payWeight = uint128(uint256(w.clearingPrice) * w.targetW);
        ++nextToClear;
        liveBids -= w.eligible;
        consumedTotal += w.eligible;
        emit WindowCleared(windowId, w.targetW, w.clearingPrice, w.winners, w.eligible);
    }

    /// Start (or continue) a window's clearing; false when the window was voided instead: it is
    /// too late (the window started) or the optimum is zero, decided before any bid is passed.
    function _clearing(uint32 windowId, Window storage w) private returns (bool) {
        uint8 s = w.state;
        if (s == W_CLEARING) return true;
        if (s == 0) revert UnknownWindow(windowId);
        if (s != W_ANNOUNCED) revert WrongWindowState(windowId, s, W_ANNOUNCED);
        if (windowId != nextToClear) revert ClearingOutOfOrder(windowId, nextToClear);
        if (block.timestamp < w.revealEnd) revert RevealRunning(windowId, w.revealEnd);
        if (block.timestamp >= w.start) {
            _void(windowId, w, VOID_CLEARED_TOO_LATE);
            return false;
        }
        if (w.optimumW == 0) {
            _void(windowId, w, VOID_TARGET_ZERO);
            return false;
        }
        w.state = W_CLEARING;
        return true;
    }

    function _passEligible(uint32 windowId, Window storage w, uint32[] calldata ids) private {
        uint256 last = w.lastKey;
        uint256 remaining = w.optimumW - w.targetW;
        (uint32 winners, uint64 price, bool payAsBid) = (w.winners, w.clearingPrice,
            w.pricing == PAY_AS_BID);
        uint256 weight = w.payWeight;
        for (uint256 i = 0; i < ids.length; ++i) {
            uint32 bidId = ids[i];
            Bid storage b = _bids[bidId];
            uint8 reason = _reason(windowId, w, bidId, b);
            if (reason != ELIGIBLE) revert BidNotEligible(bidId, reason);
            uint256 key = (uint256(b.priceMtok) << 32) | bidId;
            if (key <= last) revert MeritOrderViolated(bidId, uint96(last));
            last = key;
            uint256 award = _magnitude(b.powerW);
            if (award > remaining) award = remaining;
            (b.awardW, b.state, b.window) = (uint32(award), BID_CONSUMED, uint24(windowId));
            address household = b.household;
            _takePart(household, windowId, award > 0); // H8: activity (DRRegistry)
            if (award > 0) {
                remaining -= award;
                price = b.priceMtok;
                ++winners;
                _takes[household][windowId].awardW += uint32(award);
                if (payAsBid) weight += award * price;
                emit BidAwarded(windowId, bidId, household, uint32(award));
            }
        }
        (w.lastKey, w.targetW, w.winners, w.clearingPrice, w.payWeight) = (uint96(last),
            uint32(w.optimumW - remaining), winners, price, uint128(weight));
        w.eligible += uint32(ids.length);
    }

    function _passIneligible(uint32 windowId, Window storage w, uint32[] calldata ids) private {
        uint256 unrevealed;
        for (uint256 i = 0; i < ids.length; ++i) {
            uint32 bidId = ids[i];
            Bid storage b = _bids[bidId];
            uint8 reason = _reason(windowId, w, bidId, b);
            if (reason == ELIGIBLE) revert EligibleBidSkipped(bidId);
            if (reason < WRONG_DIRECTION) revert BidNotPassable(bidId, reason);
            b.window = uint24(windowId);
            if (reason == UNREVEALED) {
                ++unrevealed;
                _forfeitUnrevealed(windowId, bidId, b);
            }
        }
        if (unrevealed > 0) {
            w.unrevealed += uint32(unrevealed);
            liveBids -= uint32(unrevealed);
            consumedTotal += uint64(unrevealed);
        }
    }


    function _forfeitUnrevealed(uint32 windowId, uint32 bidId, Bid storage b) private {
        uint256 penalty = uint256(b.deposit) * UNREVEALED_PENALTY_BPS / 10_000;
        uint256 refund = b.deposit - penalty;
        b.state = BID_DONE;
        delete _sealed[bidId];
        _credit(b.household, refund);
        _credit(config.treasury, penalty);
        emit CommitmentUnrevealed(windowId, bidId, b.household, refund, penalty);
    }

    function _void(uint32 windowId, Window storage w, uint8 reason) private {
        w.state = W_VOID;
        ++nextToClear;
        --openWindows;
        emit WindowVoided(windowId, reason);
    }


    // ---- baselines -------------------------------------------------------------------------

    /// Commit a household's baseline for a window before it starts, signed (EIP-712 `Baseline`)
    /// by the household's gateway and sent by anyone. Fixing the baseline before the window stops
    /// a gateway from choosing it after seeing its load; a later commitment before the start
    /// replaces the earlier one (forecasts and measured inputs may still change until then).
    function commitBaseline(Baseline calldata c, bytes calldata signature) external {
        Window storage w = _windows[c.window];
        if (w.state == 0) revert UnknownWindow(c.window);
        if (w.state != W_ANNOUNCED && w.state != W_CLEARED && w.state != W_CLEARING) {
            revert BaselineWindowClosed(c.window, w.state);
        }
        if (block.timestamp >= w.start) revert BaselineTooLate(c.window, w.start);
        Household storage h = _households[c.household];
        if (!h.registered) revert UnknownHousehold(c.household);
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(BASELINE_TYPEHASH, c)));
        address signer = ECDSA.recover(digest, signature);
        if (signer != h.gateway) revert WrongSigner(signer, h.gateway);
        _baselines[c.household][c.window] = Commitment(c.inputHash, c.baselineWh, c.method, true);
        emit BaselineCommitted(c.window, c.household, msg.sender, c.method, c.inputHash,
            c.baselineWh);
    }



    // ---- Reports ---------------------------------------------------------------------------

    /// Accept a winner's Report signed (EIP-712) by its household's gateway, from any sender.
    function submitReport(Report calldata r, bytes calldata signature) external {
        _submitReport(r, signature, msg.sender);
    }

    /// Many gateways' Reports in one transaction (the aggregator relays them): each is checked as
    /// by `submitReport`, in a call of the market to itself so that a failing one reverts alone;
    /// it emits ReportRejected with the error's selector and the others are accepted.
    function submitReports(Report[] calldata reports, bytes[] calldata signatures) external {
        if (reports.length != signatures.length) {
            revert BatchLengthMismatch(reports.length, signatures.length);
        }
        for (uint256 i = 0; i < reports.length; ++i) {
            try this.submitRelayed(reports[i], signatures[i], msg.sender) {}
            catch (bytes memory reason) {
                emit ReportRejected(reports[i].window, reports[i].household, bytes4(reason));
            }
        }
    }

    /// `submitReports`' call to itself; `relayer` is the batch's sender (ReportAccepted.sender).
    function submitRelayed(Report calldata r, bytes calldata signature, address relayer) external {
        if (msg.sender != address(this)) revert NotHouseholdOrGateway(msg.sender, address(this));
        _submitReport(r, signature, relayer);
    }

    function _submitReport(Report calldata r, bytes calldata signature, address relayer) private {
        Window storage w = _requireState(r.window, W_CLEARED);
        if (r.windowStart != w.start || r.windowEnd != w.end) {
            revert ReportWindowMismatch(r.window, r.windowStart, r.windowEnd);
        }
        if (block.timestamp < w.end) revert WindowNotOver(r.window, w.end);
        Household storage h = _households[r.household];
        if (!h.registered) revert UnknownHousehold(r.household);
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(REPORT_TYPEHASH, r)));
        address signer = ECDSA.recover(digest, signature);
        if (signer != h.gateway) revert WrongSigner(signer, h.gateway);
        Take storage t = _takes[r.household][r.window];
        if (t.awardW == 0) revert NotAWinner(r.household, r.window);
        if (t.reported) revert DuplicateReport(r.household, r.window);
        if (r.seqFrom < h.nextSeq || r.seqTo < r.seqFrom) {
            revert SeqOutOfOrder(r.seqFrom, r.seqTo, h.nextSeq);
        }
        _requireCommitted(r);
        // Signed energies: an exporting household (negative actualWh) is credited in full.
        int256 expected = w.reduce
            ? int256(r.baselineWh) - int256(r.actualWh)
            : int256(r.actualWh) - int256(r.baselineWh);
        if (expected != r.deliveredWh) revert ReportInconsistent(r.deliveredWh, expected);
        h.nextSeq = r.seqTo + 1;
        (t.reported, t.deliveredWh) = (true, r.deliveredWh);
        _reportRoots[r.household][r.window] = r.merkleRoot;
        emit ReportAccepted(r.window, r.household, relayer, r.seqFrom, r.seqTo, r.deliveredWh,
            r.merkleRoot);
    }

    /// The Report must carry exactly the committed method, input hash and baseline energy.
    function _requireCommitted(Report calldata r) private view {
        Commitment storage c = _baselines[r.household][r.window];
        if (!c.committed) revert BaselineNotCommitted(r.household, r.window);
        if (c.method != r.baselineMethod || c.inputHash != r.baselineInputHash
            || c.baselineWh != r.baselineWh) {
            revert BaselineMismatch(r.household, r.window, c.method, c.inputHash, c.baselineWh);
        }
    }

    // ---- the extension ---------------------------------------------------------------------

    /// Everything else (settlement, claims, views) runs in the extension on this contract's storage.
    fallback() external {
        address target = extension;
        assembly ("memory-safe") {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), target, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) { revert(0, returndatasize()) }
            return(0, returndatasize())
        }
    }
}
