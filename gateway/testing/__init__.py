"""Fakes of drgw's own narrow interfaces for tests and benchmarks (never imported by production code)."""
