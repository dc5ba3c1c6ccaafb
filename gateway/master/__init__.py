"""The master station: the aggregator's side (fleet roster, stream checks, commands, market operation)."""
