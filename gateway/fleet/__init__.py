"""Aggregator-side tools: fleet roster, live stream checker, signed command sender."""
