// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Registry of households and aggregators, with their reputation.
/// @notice Households are keyed by their wallet; each has one gateway (the key that signs its
/// Reports) and one aggregator. Reputation is an integer score in [0, repMax]; below repThreshold a
/// participant is suspended for `suspensionWindows` windows, after which it counts as being at the
/// threshold again ("recovers"). The storage layout keeps each household in three slots so that a
/// Report and a clearing touch already non-zero slots only.
abstract contract DRRegistry is AccessControl {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    struct Household {
        // slot A: read and written by a Report
        address gateway;
        uint48 nextSeq; // lowest measurement seq the next Report may start at
        uint32 reportWindow; // window of the last accepted Report
        // slot B: read by clearing (suspension), written for winners (award)
        address aggregator;
        uint32 awardWindow; // window the award below belongs to
        uint32 awardW; // total awarded W of this household in awardWindow
        uint32 suspendedUntil; // suspended while windowId < suspendedUntil
        // slot C: delivery and score
        int64 deliveredWh; // delivered Wh of the Report for reportWindow
        uint16 score;
        bool registered;
    }

    struct Aggregator {
        bool registered;
        uint16 score;
        uint32 suspendedUntil;
    }

    struct Reputation {
        uint16 initial;
        uint16 max;
        uint16 gain; // added when a winner performs
        uint16 shortfallLoss; // taken when a winner reports but falls short
        uint16 noReportLoss; // taken when a winner sends no Report (inactivity)
        uint16 threshold; // below this, suspended
        uint32 suspensionWindows;
    }

    Reputation public reputationRules;
    mapping(address wallet => Household) internal _households;
    mapping(address aggregator => Aggregator) internal _aggregators;

    event AggregatorRegistered(address indexed aggregator, uint16 score);
    event HouseholdRegistered(
        address indexed wallet, address indexed gateway, address indexed aggregator, uint16 score
    );
    event GatewayChanged(address indexed wallet, address indexed gateway);
    event ReputationChanged(
        address indexed participant, bool isAggregator, uint16 score, uint32 suspendedUntil
    );

    error ZeroAddress(string field);
    error AggregatorExists(address aggregator);
    error UnknownAggregator(address aggregator);
    error HouseholdExists(address wallet);
    error UnknownHousehold(address wallet);
    error ReputationRulesInvalid();

    function registerAggregator(address aggregator) external onlyRole(OPERATOR_ROLE) {
        if (aggregator == address(0)) revert ZeroAddress("aggregator");
        Aggregator storage a = _aggregators[aggregator];
        if (a.registered) revert AggregatorExists(aggregator);
        a.registered = true;
        a.score = reputationRules.initial;
        emit AggregatorRegistered(aggregator, a.score);
    }

    function registerHousehold(address wallet, address gateway, address aggregator)
        external
        onlyRole(OPERATOR_ROLE)
    {
        if (wallet == address(0)) revert ZeroAddress("wallet");
        if (gateway == address(0)) revert ZeroAddress("gateway");
        if (!_aggregators[aggregator].registered) revert UnknownAggregator(aggregator);
        Household storage h = _households[wallet];
        if (h.registered) revert HouseholdExists(wallet);
        h.gateway = gateway;
        h.aggregator = aggregator;
        h.score = reputationRules.initial;
        h.registered = true;
        emit HouseholdRegistered(wallet, gateway, aggregator, h.score);
    }

    /// Key rotation: a household's gateway gets a new key.
    function setGateway(address wallet, address gateway) external onlyRole(OPERATOR_ROLE) {
        if (gateway == address(0)) revert ZeroAddress("gateway");
        Household storage h = _households[wallet];
        if (!h.registered) revert UnknownHousehold(wallet);
        h.gateway = gateway;
        emit GatewayChanged(wallet, gateway);
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
        emit ReputationChanged(wallet, false, score, until);
        Aggregator storage a = _aggregators[h.aggregator];
        (score, until) = _nextReputation(a.score, a.suspendedUntil, windowId, outcome);
        a.score = score;
        a.suspendedUntil = until;
        emit ReputationChanged(h.aggregator, true, score, until);
    }
}
