// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {DRRegistry} from "./DRRegistry.sol";
import {DRToken} from "./DRToken.sol";

/// @title Residential demand-response market: bids, windows, clearing, Reports, settlement, check.
/// @notice Units (docs/market.md): power in W (signed: negative = reduce load), energy in Wh,
/// time in unix seconds, money in milli-tokens (mtok, the token's base unit), prices in mtok/kWh,
/// currency prices in micro-currency/kWh, omega in mtok/kWh per kW, tolerance in basis points.
/// Energies are signed (int64 Wh): a household that exports during a window reports a negative
/// actual energy. Every division rounds toward zero (all operands are non-negative).
contract DRMarket is DRRegistry, EIP712 {
    using SafeERC20 for IERC20;

    uint256 public constant MAX_OPEN_BIDS = 256;
    int256 public constant MAX_POWER_W = 1_000_000;

    uint8 internal constant BID_OPEN = 1;
    uint8 internal constant BID_WITHDRAWN = 2;
    uint8 internal constant BID_CONSUMED = 3; // took part in a window, deposit still held
    uint8 internal constant BID_DONE = 4; // deposit refunded or forfeited

    uint8 internal constant W_ANNOUNCED = 1;
    uint8 internal constant W_CLEARED = 2;
    uint8 internal constant W_SETTLED = 3;
    uint8 internal constant W_CHECKED = 4;
    uint8 internal constant W_VOID = 5;

    uint8 internal constant VOID_NO_ELIGIBLE_BIDS = 1;
    uint8 internal constant VOID_TARGET_ZERO = 2;
    uint8 internal constant VOID_CLEARED_TOO_LATE = 3;

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
        // slot 1: written once by clearing
        address household;
        int32 powerW;
        uint32 awardW;
        uint8 state;
        uint24 window;
        // slot 2: never written after placement
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
        uint32 targetW;
        uint16 winners;
        uint64 clearingPrice; // mtok/kWh
        uint64 spreadMtok; // |realtime - retail| in mtok/kWh
        uint64 dEcMtok; // mtok/kWh
        uint32 optimumW;
        uint32 omegaMilli;
        uint40 announcedAt;
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
    mapping(uint256 bidId => Bid) internal _bids;
    mapping(uint256 windowId => Window) internal _windows;
    mapping(uint256 windowId => uint32[]) internal _windowBids; // eligible bids, merit order
    uint32[] internal _openBids;
    mapping(address household => mapping(uint256 windowId => Commitment)) internal _baselines;
    mapping(address household => mapping(uint256 windowId => bytes32)) internal _reportRoots;

    event ConfigSet(address treasury, uint64 depositPerKw, uint16 toleranceBps, uint32 lockoutSeconds,
        uint32 reportGraceSeconds);
    event BidPlaced(uint32 indexed bidId, address indexed household, uint40 fromTs, uint40 toTs,
        int32 powerW, uint32 ratedW, uint64 priceMtok, uint96 deposit);
    event BidWithdrawn(uint32 indexed bidId, address indexed household, uint96 deposit);
    event WindowAnnounced(uint32 indexed window, uint40 start, uint40 end, uint32 cutoff, bool reduce,
        uint64 spreadMtok, uint64 dEcMtok, uint32 optimumW);
    event WindowVoided(uint32 indexed window, uint8 reason);
    event BidAwarded(uint32 indexed window, uint32 indexed bidId, address indexed household,
        uint32 awardW);
    event WindowCleared(uint32 indexed window, uint32 targetW, uint64 clearingPrice, uint16 winners,
        uint16 eligible);
    event ReportAccepted(uint32 indexed window, address indexed household, address sender,
        uint48 seqFrom, uint48 seqTo, int64 deliveredWh, bytes32 merkleRoot);
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

    error NotHousehold(address sender);
    error BidRangeInvalid(uint40 fromTs, uint40 toTs);
    error BidPowerInvalid(int32 powerW);
    error RatedPowerInvalid(uint32 ratedW, int32 powerW);
    error TooManyOpenBids(uint256 max);
    error UnknownBid(uint32 bidId);
    error NotBidOwner(uint32 bidId, address owner);
    error BidNotOpen(uint32 bidId, uint8 state);
    error BidLocked(uint32 bidId, uint32 window);
    error WindowInProgress(uint32 window, uint8 state);
    error WindowRangeInvalid(uint40 start, uint40 end);
    error LockoutViolated(uint40 start, uint256 earliestStart);
    error ModeInvalid(uint8 mode);
    error OmegaZero();
    error UnknownWindow(uint32 window);
    error WrongWindowState(uint32 window, uint8 state, uint8 expected);
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

    constructor(address operator, IERC20 token_, Config memory config_, Reputation memory rules)
        EIP712("DRMarket", "1")
    {
        if (operator == address(0)) revert ZeroAddress("operator");
        if (address(token_) == address(0)) revert ZeroAddress("token");
        token = token_;
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
        _requireNoActiveWindow();
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
        if (toTs <= fromTs) revert BidRangeInvalid(fromTs, toTs);
        if (powerW == 0 || powerW > MAX_POWER_W || powerW < -MAX_POWER_W) {
            revert BidPowerInvalid(powerW);
        }
        uint32 magnitude = uint32(powerW < 0 ? -powerW : powerW);
        if (ratedW < magnitude || ratedW > uint256(MAX_POWER_W)) revert RatedPowerInvalid(ratedW, powerW);
        if (_openBids.length >= MAX_OPEN_BIDS) revert TooManyOpenBids(MAX_OPEN_BIDS);
        uint96 deposit = uint96(uint256(config.depositPerKw) * ratedW / 1000);
        bidId = nextBidId++;
        _bids[bidId] = Bid(household, powerW, 0, BID_OPEN, 0, fromTs, toTs, priceMtok, deposit);
        _openBids.push(bidId);
        if (deposit > 0) token.safeTransferFrom(household, address(this), deposit);
        emit BidPlaced(bidId, household, fromTs, toTs, powerW, ratedW, priceMtok, deposit);
    }

    function _requireHouseholdOrGateway(address household) private view {
        Household storage h = _households[household];
        if (!h.registered) revert NotHousehold(household);
        if (msg.sender != household && msg.sender != h.gateway) {
            revert NotHouseholdOrGateway(msg.sender, household);
        }
    }

    /// An open bid that no announced window may still clear can be withdrawn with its deposit, by
    /// its household or the household's gateway; the deposit goes back to the household.
    function withdrawBid(uint32 bidId) external {
        Bid storage b = _bids[bidId];
        address owner = b.household;
        if (owner == address(0)) revert UnknownBid(bidId);
        if (owner != msg.sender && _households[owner].gateway != msg.sender) {
            revert NotBidOwner(bidId, owner);
        }
        if (b.state != BID_OPEN) revert BidNotOpen(bidId, b.state);
        Window storage w = _windows[windowCount];
        if (w.state == W_ANNOUNCED && bidId < w.cutoff) revert BidLocked(bidId, windowCount);
        b.state = BID_WITHDRAWN;
        uint256 n = _openBids.length;
        for (uint256 i = 0; i < n; ++i) {
            if (_openBids[i] == bidId) {
                _openBids[i] = _openBids[n - 1];
                _openBids.pop();
                break;
            }
        }
        if (b.deposit > 0) token.safeTransfer(owner, b.deposit);
        emit BidWithdrawn(bidId, owner, b.deposit);
    }

    // ---- window: announce and clear ---------------------------------------------------------

    /// Announce a DR window at least lockoutSeconds ahead. Prices in micro-currency/kWh; omega in
    /// mtok/kWh per kW (the discomfort sensitivity in tokens x 1000).
    function announce(
        uint40 start,
        uint40 end,
        uint64 retailMicro,
        uint64 realtimeMicro,
        uint32 omegaMilli,
        uint8 mode
    ) external onlyRole(OPERATOR_ROLE) returns (uint32 windowId) {
        _requireNoActiveWindow();
        if (end <= start) revert WindowRangeInvalid(start, end);
        uint256 earliest = block.timestamp + config.lockoutSeconds;
        if (start < earliest) revert LockoutViolated(start, earliest);
        if (mode > 1) revert ModeInvalid(mode);
        if (omegaMilli == 0) revert OmegaZero();
        windowId = ++windowCount;
        Window storage w = _windows[windowId];
        w.start = start;
        w.end = end;
        w.cutoff = nextBidId;
        w.state = W_ANNOUNCED;
        w.mode = mode;
        w.omegaMilli = omegaMilli;
        w.announcedAt = uint40(block.timestamp);
        _setTarget(w, retailMicro, realtimeMicro);
        _emitAnnounced(windowId, w);
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

    function _emitAnnounced(uint32 windowId, Window storage w) private {
        emit WindowAnnounced(windowId, w.start, w.end, w.cutoff, w.reduce, w.spreadMtok, w.dEcMtok,
            w.optimumW);
    }

    /// Merit-order clearing: eligible bids sorted by price, then bid id (submission order); whole
    /// bids up to the target, the marginal one partially; uniform price = marginal bid's price.
    function clear(uint32 windowId) external onlyRole(OPERATOR_ROLE) {
        Window storage w = _requireState(windowId, W_ANNOUNCED);
        if (block.timestamp >= w.start) return _void(windowId, w, VOID_CLEARED_TOO_LATE);
        (uint256[] memory keys, uint256 count, uint256 sumW) = _eligible(windowId, w);
        if (count == 0) return _void(windowId, w, VOID_NO_ELIGIBLE_BIDS);
        uint256 target = sumW < w.optimumW ? sumW : w.optimumW;
        if (target == 0) return _void(windowId, w, VOID_TARGET_ZERO);
        _sort(keys, count);
        uint256 remaining = target;
        uint16 winners;
        uint64 price;
        uint32[] storage list = _windowBids[windowId];
        for (uint256 i = 0; i < count; ++i) {
            uint32 bidId = uint32(keys[i]);
            Bid storage b = _bids[bidId];
            uint256 award = remaining;
            if (remaining > 0) {
                uint256 magnitude = uint256(uint32(b.powerW < 0 ? -b.powerW : b.powerW));
                if (magnitude < award) award = magnitude;
                remaining -= award;
                price = uint64(keys[i] >> 32);
                ++winners;
                _award(windowId, b.household, uint32(award));
                emit BidAwarded(windowId, bidId, b.household, uint32(award));
            }
            b.awardW = uint32(award);
            b.state = BID_CONSUMED;
            b.window = uint24(windowId);
            list.push(bidId);
        }
        _dropConsumed();
        w.state = W_CLEARED;
        w.targetW = uint32(target);
        w.winners = winners;
        w.clearingPrice = price;
        emit WindowCleared(windowId, uint32(target), price, winners, uint16(count));
    }

    function _eligible(uint32 windowId, Window storage w)
        private
        view
        returns (uint256[] memory keys, uint256 count, uint256 sumW)
    {
        uint256 n = _openBids.length;
        keys = new uint256[](n);
        (uint40 start, uint40 end, uint32 cutoff, bool reduce) = (w.start, w.end, w.cutoff, w.reduce);
        for (uint256 i = 0; i < n; ++i) {
            uint32 bidId = _openBids[i];
            if (bidId >= cutoff) continue;
            Bid storage b = _bids[bidId];
            int32 p = b.powerW;
            if ((p < 0) != reduce) continue;
            if (b.fromTs > start || b.toTs < end) continue;
            Household storage h = _households[b.household];
            if (windowId < h.suspendedUntil) continue;
            if (windowId < _aggregators[h.aggregator].suspendedUntil) continue;
            keys[count++] = (uint256(b.priceMtok) << 32) | bidId;
            sumW += uint256(uint32(p < 0 ? -p : p));
        }
    }

    /// Insertion sort of the first `count` keys, ascending (price, then bid id).
    function _sort(uint256[] memory keys, uint256 count) private pure {
        for (uint256 i = 1; i < count; ++i) {
            uint256 k = keys[i];
            uint256 j = i;
            while (j > 0 && keys[j - 1] > k) {
                keys[j] = keys[j - 1];
                --j;
            }
            keys[j] = k;
        }
    }

    function _award(uint32 windowId, address wallet, uint32 award) private {
        Household storage h = _households[wallet];
        if (h.awardWindow != windowId) {
            h.awardWindow = windowId;
            h.awardW = award;
        } else {
            h.awardW += award;
        }
    }

    /// Rewrite the open set keeping only the bids still open.
    function _dropConsumed() private {
        uint256 n = _openBids.length;
        uint256 kept;
        for (uint256 i = 0; i < n; ++i) {
            uint32 bidId = _openBids[i];
            if (_bids[bidId].state == BID_OPEN) {
                if (kept != i) _openBids[kept] = bidId;
                ++kept;
            }
        }
        for (uint256 i = kept; i < n; ++i) _openBids.pop();
    }

    function _void(uint32 windowId, Window storage w, uint8 reason) private {
        w.state = W_VOID;
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
        if (w.state != W_ANNOUNCED && w.state != W_CLEARED) {
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

    function baselineDigest(Baseline calldata c) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(BASELINE_TYPEHASH, c)));
    }

    function baseline(address household, uint32 windowId) external view returns (Commitment memory) {
        return _baselines[household][windowId];
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

    // ---- Reports ---------------------------------------------------------------------------

    /// Accept a winner's Report signed (EIP-712) by its household's gateway, from any sender.
    function submitReport(Report calldata r, bytes calldata signature) external {
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
        if (h.awardWindow != r.window || h.awardW == 0) revert NotAWinner(r.household, r.window);
        if (h.reportWindow == r.window) revert DuplicateReport(r.household, r.window);
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
        h.reportWindow = r.window;
        h.deliveredWh = r.deliveredWh;
        _reportRoots[r.household][r.window] = r.merkleRoot;
        emit ReportAccepted(r.window, r.household, msg.sender, r.seqFrom, r.seqTo, r.deliveredWh,
            r.merkleRoot);
    }

    function reportDigest(Report calldata r) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REPORT_TYPEHASH, r)));
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

    // ---- settle and check ------------------------------------------------------------------

    /// Pay every winner that reported: clearing price x awarded W x window seconds / 3_600_000.
    function settle(uint32 windowId) external onlyRole(OPERATOR_ROLE) {
        Window storage w = _requireState(windowId, W_CLEARED);
        uint256 until = uint256(w.end) + config.reportGraceSeconds;
        if (block.timestamp < until) revert ReportGraceRunning(windowId, until);
        uint32[] storage list = _windowBids[windowId];
        uint256 seconds_ = w.end - w.start;
        address treasury = config.treasury;
        uint256 total;
        for (uint256 i = 0; i < w.winners; ++i) {
            uint32 bidId = list[i];
            Bid storage b = _bids[bidId];
            if (_households[b.household].reportWindow != windowId) continue;
            uint256 amount = uint256(w.clearingPrice) * b.awardW * seconds_ / 3_600_000;
            total += amount;
            if (amount > 0) token.safeTransferFrom(treasury, b.household, amount);
            emit BidPaid(windowId, bidId, b.household, amount);
        }
        w.state = W_SETTLED;
        emit WindowSettled(windowId, total);
    }

    /// Verify delivery: a household performs when delivered Wh >= (1 - tolerance) x its awarded
    /// energy, compared exactly as delivered x 3600 x 10000 >= awardW x seconds x (10000 - tol).
    function check(uint32 windowId) external onlyRole(OPERATOR_ROLE) {
        Window storage w = _requireState(windowId, W_SETTLED);
        uint32[] storage list = _windowBids[windowId];
        uint256 seconds_ = w.end - w.start;
        uint256 need = seconds_ * (10_000 - config.toleranceBps);
        address treasury = config.treasury;
        (uint256 refunded, uint256 forfeited) = (0, 0);
        for (uint256 i = 0; i < list.length; ++i) {
            uint32 bidId = list[i];
            Bid storage b = _bids[bidId];
            uint8 outcome;
            if (i < w.winners) {
                outcome = _verdict(windowId, b.household, need);
                _rateHousehold(b.household, windowId, outcome);
            }
            b.state = BID_DONE;
            if (outcome == 0) {
                refunded += b.deposit;
                if (b.deposit > 0) token.safeTransfer(b.household, b.deposit);
                emit DepositRefunded(windowId, bidId, b.household, b.deposit);
            } else {
                forfeited += b.deposit;
                if (b.deposit > 0) token.safeTransfer(treasury, b.deposit);
                emit DepositForfeited(windowId, bidId, b.household, b.deposit);
            }
        }
        w.state = W_CHECKED;
        emit WindowChecked(windowId, refunded, forfeited);
    }

    /// 0 performed, 1 reported short, 2 no Report.
    function _verdict(uint32 windowId, address wallet, uint256 need) private view returns (uint8) {
        Household storage h = _households[wallet];
        if (h.reportWindow != windowId) return 2;
        if (h.deliveredWh < 0) return 1;
        uint256 delivered = uint256(uint64(h.deliveredWh)) * 3600 * 10_000;
        return delivered >= uint256(h.awardW) * need ? 0 : 1;
    }

    // ---- views and guards ------------------------------------------------------------------

    function bid(uint32 bidId) external view returns (Bid memory) {
        return _bids[bidId];
    }

    function window(uint32 windowId) external view returns (Window memory) {
        return _windows[windowId];
    }

    function windowBids(uint32 windowId) external view returns (uint32[] memory) {
        return _windowBids[windowId];
    }

    function openBids() external view returns (uint32[] memory) {
        return _openBids;
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _requireState(uint32 windowId, uint8 expected) private view returns (Window storage w) {
        w = _windows[windowId];
        if (w.state == 0) revert UnknownWindow(windowId);
        if (w.state != expected) revert WrongWindowState(windowId, w.state, expected);
    }

    function _requireNoActiveWindow() private view {
        uint8 s = _windows[windowCount].state;
        if (s != 0 && s != W_CHECKED && s != W_VOID) revert WindowInProgress(windowCount, s);
    }
}
