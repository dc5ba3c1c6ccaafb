"""Durable local storage (SQLite): measurements, outboxes, events, counters."""
