"""The DR market's pure reference model: clearing, settlement, verification, reputation, scenarios."""
