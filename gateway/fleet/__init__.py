"""Aggregator-side tools: fleet CLI, market driver."""
