"""Simulated device firmware and hardware shims for testing without hardware."""
