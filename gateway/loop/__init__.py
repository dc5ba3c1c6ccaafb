"""Closed loop: DR events, baselines, live checker, actions."""
