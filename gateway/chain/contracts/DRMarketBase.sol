// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {DRRegistry} from "./DRRegistry.sol";

/// @title State, events and errors shared by DRMarket and its settlement extension.
/// @notice DRMarket (bids, windows, clearing, Reports) and DRMarketSettlement (settlement, claims,
/// views) have this one storage layout: the market runs the extension's functions by DELEGATECALL
/// (its fallback), which keeps each contract under the 24,576-byte code limit (EIP-170).
/// @notice Units (docs/market.md): power in W (signed: negative = reduce load), energy in Wh,
/// time in unix seconds, money in milli-tokens (mtok, the token's base unit), prices in mtok/kWh,
/// currency prices in micro-currency/kWh, omega in mtok/kWh per kW, tolerance in basis points.
/// Energies are signed (int64 Wh): a household that exports during a window reports a negative
/// actual energy. Every division rounds toward zero (all operands are non-negative).
/// Programme scale (issue 14): no transaction loops over all bids. The operator sorts off chain and
/// submits the merit order in batches that the contract verifies in O(n) (`clearBatch`,
/// `finishClearing`); settlement pulls the window's payments once and settles bids in batches
/// into per-address balances that each household claims (`settle`, `settleBatch`, `claim`).
abstract contract DRMarketBase is DRRegistry, EIP712 {
    using SafeERC20 for IERC20;

    int256 public constant MAX_POWER_W = 1_000_000;
    /// Share of a sealed bid's deposit kept (for the treasury) when it is not revealed in time.
    uint16 public constant UNREVEALED_PENALTY_BPS = 1000;

    uint8 internal constant BID_OPEN = 1;
    uint8 internal constant BID_WITHDRAWN = 2;
    uint8 internal constant BID_CONSUMED = 3; // took part in a window, deposit still held
    uint8 internal constant BID_DONE = 4; // deposit refunded or forfeited
    uint8 internal constant BID_SEALED = 5; // committed (hash and deposit), not yet revealed

    uint8 internal constant W_ANNOUNCED = 1;
    uint8 internal constant W_CLEARED = 2;
    uint8 internal constant W_SETTLED = 3;
    uint8 internal constant W_CHECKED = 4;
    uint8 internal constant W_VOID = 5;
    uint8 internal constant W_CLEARING = 6; // batches under way

    uint8 internal constant VOID_NO_ELIGIBLE_BIDS = 1;
    uint8 internal constant VOID_TARGET_ZERO = 2;
    uint8 internal constant VOID_CLEARED_TOO_LATE = 3;

    uint8 internal constant UNIFORM = 0; // every winner paid the marginal price (seed 003)
    uint8 internal constant PAY_AS_BID = 1; // every winner paid its own price (seed 002)

    // Why a bid is not passed as eligible (`reasons`); 1-3 cannot be passed at all.
    uint8 internal constant ELIGIBLE = 0;
    uint8 internal constant NOT_LIVE = 1; // unknown, withdrawn, consumed or done
    uint8 internal constant LATE = 2; // placed after the announcement
    uint8 internal constant PASSED = 3; // already passed in this window
    uint8 internal constant WRONG_DIRECTION = 4;
    uint8 internal constant RANGE = 5;
    uint8 internal constant HOUSEHOLD_SUSPENDED = 6;
    uint8 internal constant AGGREGATOR_SUSPENDED = 7;
    uint8 internal constant UNREVEALED = 8;

    bytes32 public constant REPORT_TYPEHASH = keccak256(
        "Report(address household,uint32 window,uint48 seqFrom,uint48 seqTo,uint40 windowStart,"
        "uint40 windowEnd,uint16 baselineMethod,bytes32 baselineInputHash,int64 baselineWh,"
        "int64 actualWh,int64 deliveredWh,bytes32 merkleRoot)"
    );
    bytes32 public constant BASELINE_TYPEHASH = keccak256(
        "Baseline(address household,uint32 window,uint16 method,bytes32 inputHash,int64 baselineWh)"
    );

    struct Config {
        address treasury; // pays winners, receives forfeited deposits
        uint64 depositPerKw; // mtok of deposit per kW of rated power
        uint16 toleranceBps; // allowed shortfall, basis points of the awarded energy
        uint32 lockoutSeconds; // minimum time from announcement to window start
        uint32 reportGraceSeconds; // time after window end before settlement
    }

    struct Bid {
        // slot 1: written by placement, reveal and clearing
        address household;
        int32 powerW; // 0 while sealed
        uint32 awardW;
        uint8 state;
        uint24 window; // the last window that passed the bid (its window once consumed)
        // slot 2: written at placement (a sealed bid's at its reveal)
        uint40 fromTs;
        uint40 toTs;
        uint64 priceMtok;
        uint96 deposit;
    }

    struct Window {
        uint40 start;
        uint40 end;
        uint32 cutoff; // bids with id < cutoff were placed before the announcement
        uint8 state;
        bool reduce; // wanted direction: true = load reduction (negative powerW)
        uint8 mode; // 0 shift (dEc = 0), 1 curtail (dEc = retail price)
        uint8 pricing; // 0 uniform, 1 pay-as-bid
        uint40 announcedAt;
        uint40 revealEnd; // sealed bids reveal before this; clearing starts at or after it
        uint32 omegaMilli;
        uint32 targetW; // awarded so far; the target once cleared
        uint32 optimumW;
        uint32 winners;
        uint32 eligible;
        uint32 passed; // bids passed so far (eligible and ineligible)
        uint32 unrevealed;
        uint32 liveAtAnnounce; // live bids when announced: all of them have id < cutoff
        uint32 settled;
        uint64 clearingPrice; // mtok/kWh: the marginal (last awarded) bid's price
        uint64 spreadMtok; // |realtime - retail| in mtok/kWh
        uint64 dEcMtok; // mtok/kWh
        uint64 consumedAtAnnounce; // `consumedTotal` when announced
        uint96 lastKey; // (price << 32 | bid id) of the last eligible bid passed
        uint128 payWeight; // sum of price x award W of all winners (what they cost if all report)
        uint128 pulled; // mtok taken from the treasury by `settle`
        uint128 paid;
        uint128 refunded;
        uint128 forfeited;
    }

    /// A household's part in one window: its award and its Report.
    struct Take {
        uint32 awardW;
        bool reported;
        int64 deliveredWh;
    }

    struct Report {
        address household;
        uint32 window;
        uint48 seqFrom;
        uint48 seqTo;
        uint40 windowStart;
        uint40 windowEnd;
        uint16 baselineMethod;
        bytes32 baselineInputHash;
        int64 baselineWh;
        int64 actualWh;
        int64 deliveredWh;
        bytes32 merkleRoot;
    }

    /// What a household's gateway signs before a window: the baseline the Report must carry.
    struct Baseline {
        address household;
        uint32 window;
        uint16 method;
        bytes32 inputHash;
        int64 baselineWh;
    }

    /// A stored commitment (two slots): `committed` tells a zero baseline from none.
    struct Commitment {
        bytes32 inputHash;
        int64 baselineWh;
        uint16 method;
        bool committed;
    }

    IERC20 public immutable token;
    Config public config;
    uint32 public nextBidId = 1;
    uint32 public windowCount;
    uint32 public nextToClear = 1; // windows clear in announcement order
    uint32 public liveBids; // open or sealed
    uint32 public openWindows; // announced, not yet checked or voided
    uint64 public consumedTotal; // bids ever consumed by a window (eligible or unrevealed)
    mapping(uint256 bidId => Bid) internal _bids;
    mapping(uint256 bidId => bytes32) internal _sealed;
    mapping(uint256 windowId => Window) internal _windows;
    mapping(address household => mapping(uint256 windowId => Take)) internal _takes;
    mapping(address account => uint256) public claimable;
    mapping(address household => mapping(uint256 windowId => Commitment)) internal _baselines;
    mapping(address household => mapping(uint256 windowId => bytes32)) internal _reportRoots;

    event ConfigSet(address treasury, uint64 depositPerKw, uint16 toleranceBps, uint32 lockoutSeconds,
        uint32 reportGraceSeconds);
    event BidPlaced(uint32 indexed bidId, address indexed household, uint40 fromTs, uint40 toTs,
        int32 powerW, uint32 ratedW, uint64 priceMtok, uint96 deposit);
    event BidCommitted(uint32 indexed bidId, address indexed household, bytes32 hash, uint32 ratedW,
        uint96 deposit);
    event BidRevealed(uint32 indexed bidId, address indexed household, uint40 fromTs, uint40 toTs,
        int32 powerW, uint64 priceMtok);
    event BidWithdrawn(uint32 indexed bidId, address indexed household, uint96 deposit);
    event WindowAnnounced(uint32 indexed window, uint40 start, uint40 end, uint32 cutoff, bool reduce,
        uint64 spreadMtok, uint64 dEcMtok, uint32 optimumW, uint8 pricing, uint40 revealEnd);
    event WindowVoided(uint32 indexed window, uint8 reason);
    event BidAwarded(uint32 indexed window, uint32 indexed bidId, address indexed household,
        uint32 awardW);
    event CommitmentUnrevealed(uint32 indexed window, uint32 indexed bidId,
        address indexed household, uint256 refund, uint256 penalty);
    event WindowCleared(uint32 indexed window, uint32 targetW, uint64 clearingPrice, uint32 winners,
        uint32 eligible);
    event ReportAccepted(uint32 indexed window, address indexed household, address sender,
        uint48 seqFrom, uint48 seqTo, int64 deliveredWh, bytes32 merkleRoot);
    event ReportRejected(uint32 indexed window, address indexed household, bytes4 reason);
    event BaselineCommitted(uint32 indexed window, address indexed household, address sender,
        uint16 method, bytes32 inputHash, int64 baselineWh);
    event BidPaid(uint32 indexed window, uint32 indexed bidId, address indexed household,
        uint256 amount);
    event WindowSettled(uint32 indexed window, uint256 paid);
    event DepositRefunded(uint32 indexed window, uint32 indexed bidId, address indexed household,
        uint256 amount);
    event DepositForfeited(uint32 indexed window, uint32 indexed bidId, address indexed household,
        uint256 amount);
    event WindowChecked(uint32 indexed window, uint256 refunded, uint256 forfeited);
    event Claimed(address indexed account, uint256 amount);

    error NotHousehold(address sender);
    error BidRangeInvalid(uint40 fromTs, uint40 toTs);
    error BidPowerInvalid(int32 powerW);
    error RatedPowerInvalid(uint32 ratedW, int32 powerW);
    error UnknownBid(uint32 bidId);
    error NotBidOwner(uint32 bidId, address owner);
    error BidNotOpen(uint32 bidId, uint8 state);
    error BidLocked(uint32 bidId, uint32 window);
    error WindowInProgress(uint32 window, uint8 state);
    error WindowRangeInvalid(uint40 start, uint40 end);
    error WindowOverlap(uint40 start, uint40 previousEnd);
    error LockoutViolated(uint40 start, uint256 earliestStart);
    error ModeInvalid(uint8 mode);
    error PricingInvalid(uint8 pricing);
    error RevealTooLong(uint256 revealEnd, uint40 start);
    error OmegaZero();
    error UnknownWindow(uint32 window);
    error WrongWindowState(uint32 window, uint8 state, uint8 expected);
    error ClearingOutOfOrder(uint32 window, uint32 nextToClear);
    error RevealRunning(uint32 window, uint40 revealEnd);
    error BidNotEligible(uint32 bidId, uint8 reason);
    error MeritOrderViolated(uint32 bidId, uint96 previousKey);
    error EligibleBidSkipped(uint32 bidId);
    error BidNotPassable(uint32 bidId, uint8 reason);
    error BidsNotPassed(uint32 window, uint256 expected, uint256 passed);
    error BidNotSettleable(uint32 bidId, uint32 window);
    error RevealNotOpen(uint32 bidId);
    error RevealClosed(uint32 bidId, uint40 revealEnd);
    error CommitmentMismatch(uint32 bidId);
    error DepositTooSmall(uint32 bidId, uint256 needed, uint96 deposit);
    error BatchLengthMismatch(uint256 reports, uint256 signatures);
    error ReportWindowMismatch(uint32 window, uint40 start, uint40 end);
    error WindowNotOver(uint32 window, uint40 end);
    error WrongSigner(address signer, address gateway);
    error NotAWinner(address household, uint32 window);
    error DuplicateReport(address household, uint32 window);
    error SeqOutOfOrder(uint48 seqFrom, uint48 seqTo, uint48 nextSeq);
    error ReportInconsistent(int64 deliveredWh, int256 expectedWh);
    error ReportGraceRunning(uint32 window, uint256 until);
    error ToleranceInvalid(uint16 toleranceBps);
    error NotHouseholdOrGateway(address sender, address household);
    error BaselineTooLate(uint32 window, uint40 start);
    error BaselineWindowClosed(uint32 window, uint8 state);
    error BaselineNotCommitted(address household, uint32 window);
    error BaselineMismatch(address household, uint32 window, uint16 committedMethod,
        bytes32 committedInputHash, int64 committedWh);

    constructor(IERC20 token_) EIP712("DRMarket", "1") {
        if (address(token_) == address(0)) revert ZeroAddress("token");
        token = token_;
    }

    function _magnitude(int32 powerW) internal pure returns (uint256) {
        return uint256(uint32(powerW < 0 ? -powerW : powerW));
    }
    /// Why bid `bidId` cannot be passed as eligible in `windowId` now (ELIGIBLE = it can).
    function _reason(uint32 windowId, Window storage w, uint32 bidId, Bid storage b)
        internal
        view
        returns (uint8)
    {
        uint8 state = b.state;
        if (state != BID_OPEN && state != BID_SEALED) return NOT_LIVE;
        if (bidId >= w.cutoff) return LATE;
        if (b.window == windowId) return PASSED;
        if (state == BID_SEALED) return UNREVEALED;
        if ((b.powerW < 0) != w.reduce) return WRONG_DIRECTION;
        if (b.fromTs > w.start || b.toTs < w.end) return RANGE;
        Household storage h = _households[b.household];
        if (windowId < h.suspendedUntil) return HOUSEHOLD_SUSPENDED;
        if (windowId < _aggregators[h.aggregator].suspendedUntil) return AGGREGATOR_SUSPENDED;
        return ELIGIBLE;
    }
    function _credit(address account, uint256 amount) internal {
        if (amount > 0) claimable[account] += amount;
    }
    function _requireState(uint32 windowId, uint8 expected) internal view returns (Window storage w) {
        w = _windows[windowId];
        if (w.state == 0) revert UnknownWindow(windowId);
        if (w.state != expected) revert WrongWindowState(windowId, w.state, expected);
    }

    function _windowsAnnounced() internal view override returns (uint32) { return windowCount; } // H8
}
