"""Checks of an installation end to end (`drgw doctor`): each says OK / WARN / FAIL and, for a
problem, the fix. The CLI (gateway.commands.doctor) only presents them."""

from gateway.ops.doctor.check import Check, Level
from gateway.ops.doctor.diagnosis import SERVICE_USER, diagnose

__all__ = ["SERVICE_USER", "Check", "Level", "diagnose"]
