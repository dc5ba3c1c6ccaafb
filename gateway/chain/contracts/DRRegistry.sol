// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Registry of households and aggregators, with their reputation and two-way selection.
/// @notice Households are keyed by their wallet; each has one gateway (the key that signs its
/// Reports) and one aggregator, which the household chooses (and may change) and which admits it
/// only if its score is at least the aggregator's `minScore` (seed 002's two-way selection).
/// Reputation is an integer score in [0, repMax]; below repThreshold a participant is suspended for
/// `suspensionWindows` windows, after which it counts as being at the threshold again ("recovers").
/// Inactivity: a participant loses `inactivityLoss` per window it took no part in (capped at
/// `inactivityCap` windows per gap, never below the threshold), applied lazily from the last window
/// it was active in, so no transaction loops over participants; views return the effective score.
/// The reference model is gateway/market/reputation.py (`Registry`), differential-tested.
abstract contract DRRegistry is AccessControl {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    /// Awards and delivered energy are per (household, window) in DRMarketBase's `Take`
    /// (`take(household, window)`): with several windows announced ahead one slot per household
    /// could not hold them, so the registry keeps only identity, sequence and reputation.
    struct Household {
        // slot A: read and written by a Report
        address gateway;
        uint48 nextSeq; // lowest measurement seq the next Report may start at
        // slot B: read by clearing (suspension)
        address aggregator;
        uint32 suspendedUntil; // suspended while windowId < suspendedUntil
        // slot C: score and activity (written once per window by `_takePart`)
        uint16 score; // stored score: the effective one is `_effective(...)`
        bool registered;
        uint32 lastActive; // last window with an eligible bid (inactivity counts from here)
        uint16 pendingAwards; // awarded bids not yet rated: the aggregator cannot change meanwhile
    }

    struct Aggregator {
        bool registered;
        uint16 score;
        uint32 suspendedUntil;
        uint16 minScore; // lowest household score it admits
        uint32 lastActive; // last window one of its households was active in
    }

    struct Reputation {
        uint16 initial;
        uint16 max;
        uint16 gain; // added when a winner performs
        uint16 shortfallLoss; // taken when a winner reports but falls short
        uint16 noReportLoss; // taken when a winner sends no Report
        uint16 threshold; // below this, suspended
        uint32 suspensionWindows;
        uint16 inactivityLoss; // taken per window without activity
        uint16 inactivityCap; // at most this many windows are charged per gap
    }

    /// One row of a ranking or score page: a participant and its effective score.
    struct Ranked {
        address participant;
        uint16 score;
    }

    Reputation public reputationRules;
    mapping(address wallet => Household) internal _households;
    mapping(address aggregator => Aggregator) internal _aggregators;
    address[] internal _householdList; // registration order: ranking ties and paging
    address[] internal _aggregatorList;

    event AggregatorRegistered(address indexed aggregator, uint16 score);
    event HouseholdRegistered(
        address indexed wallet, address indexed gateway, address indexed aggregator, uint16 score
    );
    event GatewayChanged(address indexed wallet, address indexed gateway);
    event ReputationChanged(
        address indexed participant, bool isAggregator, uint16 score, uint32 suspendedUntil
    );
    event AggregatorChosen(address indexed wallet, address indexed aggregator, address previous);
    event MinScoreSet(address indexed aggregator, uint16 minScore);

    error ZeroAddress(string field);
    error AggregatorExists(address aggregator);
    error UnknownAggregator(address aggregator);
    error HouseholdExists(address wallet);
    error UnknownHousehold(address wallet);
    error ReputationRulesInvalid();
    error AggregatorSuspended(address aggregator, uint32 suspendedUntil);
    error ScoreBelowMinimum(address wallet, uint16 score, uint16 minScore);
    error AwardsPending(address wallet, uint16 pendingAwards);
    error SameAggregator(address wallet, address aggregator);
    error MinScoreInvalid(uint16 minScore, uint16 max);

    /// The id of the latest announced window (0 before the first): the reference "now" of the
    /// registry's views and of a new participant's activity. The market implements it.
    function _windowsAnnounced() internal view virtual returns (uint32);

    function registerAggregator(address aggregator) external onlyRole(OPERATOR_ROLE) {
        if (aggregator == address(0)) revert ZeroAddress("aggregator");
        Aggregator storage a = _aggregators[aggregator];
        if (a.registered) revert AggregatorExists(aggregator);
        a.registered = true;
        a.score = reputationRules.initial;
        a.lastActive = _windowsAnnounced(); // not charged for windows before it existed
        _aggregatorList.push(aggregator);
        emit AggregatorRegistered(aggregator, a.score);
    }

    /// The operator registers a household with its first aggregator, under the same admission
    /// rules as `chooseAggregator` (not suspended, initial score >= its minScore).
    function registerHousehold(address wallet, address gateway, address aggregator)
        external
        onlyRole(OPERATOR_ROLE)
    {
        if (wallet == address(0)) revert ZeroAddress("wallet");
        if (gateway == address(0)) revert ZeroAddress("gateway");
        Household storage h = _households[wallet];
        if (h.registered) revert HouseholdExists(wallet);
        uint16 initial = reputationRules.initial;
        _requireAdmits(aggregator, wallet, initial);
        h.gateway = gateway;
        h.aggregator = aggregator;
        h.score = initial;
        h.registered = true;
        h.lastActive = _windowsAnnounced();
        _householdList.push(wallet);
        emit HouseholdRegistered(wallet, gateway, aggregator, initial);
    }

    /// Key rotation: a household's gateway gets a new key.
    function setGateway(address wallet, address gateway) external onlyRole(OPERATOR_ROLE) {
        if (gateway == address(0)) revert ZeroAddress("gateway");
        Household storage h = _households[wallet];
        if (!h.registered) revert UnknownHousehold(wallet);
        h.gateway = gateway;
        emit GatewayChanged(wallet, gateway);
    }

    /// The calling household moves to `aggregator`, which must be registered, not suspended and
    /// admit its effective score. Refused while the household has awarded bids not yet rated, so
    /// every outcome is credited to the aggregator the household had when it was awarded; the
    /// change applies to every window cleared after this call (clearing reads `aggregator`).
    function chooseAggregator(address aggregator) external {
        Household storage h = _households[msg.sender];
        if (!h.registered) revert UnknownHousehold(msg.sender);
        if (h.pendingAwards > 0) revert AwardsPending(msg.sender, h.pendingAwards);
        address previous = h.aggregator;
        if (previous == aggregator) revert SameAggregator(msg.sender, aggregator);
        uint16 score = _effective(h.score, h.suspendedUntil, h.lastActive, _windowsAnnounced());
        _requireAdmits(aggregator, msg.sender, score);
        h.aggregator = aggregator;
        emit AggregatorChosen(msg.sender, aggregator, previous);
    }

    /// The calling aggregator admits from now on only households whose score is at least
    /// `minScore`; households it already has stay (they share its reputation either way).
    function setMinScore(uint16 minScore) external {
        Aggregator storage a = _aggregators[msg.sender];
        if (!a.registered) revert UnknownAggregator(msg.sender);
        uint16 max = reputationRules.max;
        if (minScore > max) revert MinScoreInvalid(minScore, max);
        a.minScore = minScore;
        emit MinScoreSet(msg.sender, minScore);
    }

    function _requireAdmits(address aggregator, address wallet, uint16 score) private view {
        Aggregator storage a = _aggregators[aggregator];
        if (!a.registered) revert UnknownAggregator(aggregator);
        if (_windowsAnnounced() < a.suspendedUntil) {
            revert AggregatorSuspended(aggregator, a.suspendedUntil);
        }
        if (score < a.minScore) revert ScoreBelowMinimum(wallet, score, a.minScore);
    }

    function household(address wallet) external view returns (Household memory) {
        return _households[wallet];
    }

    function aggregatorInfo(address aggregator) external view returns (Aggregator memory) {
        return _aggregators[aggregator];
    }

    function _setReputationRules(Reputation memory rules) internal {
        if (rules.threshold > rules.max || rules.initial > rules.max || rules.max == 0) {
            revert ReputationRulesInvalid();
        }
        reputationRules = rules;
    }

    // ---- inactivity and activity -----------------------------------------------------------

    /// Score as window `w` sees it: a finished suspension recovers to the threshold; a score above
    /// the threshold loses inactivityLoss per window strictly between lastActive and w (at most
    /// inactivityCap of them), floored at the threshold: inactivity alone never suspends.
    function _effective(uint16 score, uint32 suspendedUntil, uint32 lastActive, uint32 w)
        internal
        view
        returns (uint16)
    {
        Reputation memory r = reputationRules;
        if (score < r.threshold) return suspendedUntil <= w ? r.threshold : score;
        if (w <= uint256(lastActive) + 1) return score;
        uint256 gap = w - lastActive - 1;
        if (gap > r.inactivityCap) gap = r.inactivityCap;
        uint256 loss = gap * r.inactivityLoss;
        return score - r.threshold > loss ? uint16(score - loss) : r.threshold;
    }

    /// Activity hook for the market: `household` has an eligible bid in `windowId` (`awarded` if
    /// the bid won any W). Materialises both participants' inactivity up to the window, marks
    /// them active, and counts the award until `_rateHousehold` rates it. Call once per eligible
    /// bid, in window order; `_rateHousehold` once per awarded bid.
    function _takePart(address wallet, uint32 windowId, bool awarded) internal {
        Household storage h = _households[wallet];
        if (windowId > h.lastActive) {
            h.score = _effective(h.score, h.suspendedUntil, h.lastActive, windowId);
            h.lastActive = windowId;
        }
        if (awarded) ++h.pendingAwards;
        Aggregator storage a = _aggregators[h.aggregator];
        if (windowId > a.lastActive) {
            a.score = _effective(a.score, a.suspendedUntil, a.lastActive, windowId);
            a.lastActive = windowId;
        }
    }

    /// Score after one outcome in `windowId`. A participant below the threshold whose suspension is
    /// over counts as being at the threshold first (it has recovered).
    function _nextReputation(
        uint16 score,
        uint32 suspendedUntil,
        uint32 windowId,
        uint8 outcome // 0 performed, 1 shortfall, 2 no report
    ) internal view returns (uint16, uint32) {
        Reputation memory r = reputationRules;
        if (score < r.threshold && suspendedUntil <= windowId) score = r.threshold;
        if (outcome == 0) {
            uint256 raised = uint256(score) + r.gain;
            score = raised > r.max ? r.max : uint16(raised);
        } else {
            uint16 loss = outcome == 1 ? r.shortfallLoss : r.noReportLoss;
            score = score > loss ? score - loss : 0;
            if (score < r.threshold) suspendedUntil = windowId + 1 + r.suspensionWindows;
        }
        return (score, suspendedUntil);
    }

    function _rateHousehold(address wallet, uint32 windowId, uint8 outcome) internal {
        Household storage h = _households[wallet];
        (uint16 score, uint32 until) = _nextReputation(h.score, h.suspendedUntil, windowId, outcome);
        h.score = score;
        h.suspendedUntil = until;
        if (h.pendingAwards > 0) --h.pendingAwards;
        emit ReputationChanged(wallet, false, score, until);
        Aggregator storage a = _aggregators[h.aggregator];
        (score, until) = _nextReputation(a.score, a.suspendedUntil, windowId, outcome);
        a.score = score;
        a.suspendedUntil = until;
        emit ReputationChanged(h.aggregator, true, score, until);
    }

    // ---- scores and rankings (views) --------------------------------------------------------

    function householdCount() external view returns (uint256) {
        return _householdList.length;
    }

    function aggregatorCount() external view returns (uint256) {
        return _aggregatorList.length;
    }

    /// Effective scores of participants [offset, offset + limit) in registration order: O(limit)
    /// reads, the way to page through a large registry and sort off chain.
    function householdScores(uint256 offset, uint256 limit) external view returns (Ranked[] memory) {
        return _scores(false, offset, limit);
    }

    function aggregatorScores(uint256 offset, uint256 limit) external view returns (Ranked[] memory) {
        return _scores(true, offset, limit);
    }

    /// Households by effective score, descending, ties in registration order, rows
    /// [offset, offset + limit). Reads every household (about 6,500 gas each, cold) and sorts in
    /// memory by counting (O(n + max)): fine for thousands in an eth_call; for 10,000 and more
    /// page `householdScores` and sort off chain (MarketClient.rank_households does).
    function rankHouseholds(uint256 offset, uint256 limit) external view returns (Ranked[] memory) {
        return _page(_rank(_scores(false, 0, type(uint256).max)), offset, limit);
    }

    function rankAggregators(uint256 offset, uint256 limit) external view returns (Ranked[] memory) {
        return _page(_rank(_scores(true, 0, type(uint256).max)), offset, limit);
    }

    function _scores(bool aggregators, uint256 offset, uint256 limit)
        private
        view
        returns (Ranked[] memory rows)
    {
        address[] storage list = aggregators ? _aggregatorList : _householdList;
        uint256 n = offset < list.length ? list.length - offset : 0;
        rows = new Ranked[](n < limit ? n : limit);
        uint32 w = _windowsAnnounced();
        for (uint256 i = 0; i < rows.length; ++i) {
            address p = list[offset + i];
            uint16 s;
            if (aggregators) {
                Aggregator storage a = _aggregators[p];
                s = _effective(a.score, a.suspendedUntil, a.lastActive, w);
            } else {
                Household storage h = _households[p];
                s = _effective(h.score, h.suspendedUntil, h.lastActive, w);
            }
            rows[i] = Ranked(p, s);
        }
    }

    /// Stable counting sort, descending by score; a score above a since lowered `max` sorts as
    /// max + 1 (ties with the others above it keep registration order).
    function _rank(Ranked[] memory rows) private view returns (Ranked[] memory sorted) {
        uint256 top = uint256(reputationRules.max) + 1;
        uint256[] memory next = new uint256[](top + 1);
        for (uint256 i = 0; i < rows.length; ++i) ++next[_key(rows[i].score, top)];
        uint256 at;
        for (uint256 s = next.length; s > 0; --s) { // first slot of each score, high to low
            uint256 n = next[s - 1];
            next[s - 1] = at;
            at += n;
        }
        sorted = new Ranked[](rows.length);
        for (uint256 i = 0; i < rows.length; ++i) sorted[next[_key(rows[i].score, top)]++] = rows[i];
    }

    function _key(uint16 score, uint256 top) private pure returns (uint256) {
        return score < top ? score : top;
    }

    function _page(Ranked[] memory rows, uint256 offset, uint256 limit)
        private
        pure
        returns (Ranked[] memory out)
    {
        if (offset >= rows.length) return new Ranked[](0);
        uint256 n = rows.length - offset < limit ? rows.length - offset : limit;
        out = new Ranked[](n);
        for (uint256 i = 0; i < n; ++i) out[i] = rows[offset + i];
    }
}
