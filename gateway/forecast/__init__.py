"""Forecasts of a household's load and of the flexibility of its levers, learned from measured history.

Pure (time is an argument; no I/O): the loop's bidder hands in slot series read from its journal and
gets back forecasts with their uncertainty. docs/forecast.md describes the methods and their measured
accuracy (bench/forecast.py).
"""

from gateway.forecast.flex import FlexForecast, forecast_flex
from gateway.forecast.load import LoadForecast, forecast_load
from gateway.forecast.series import LeverHistory, SlotSeries

__all__ = ["FlexForecast", "LeverHistory", "LoadForecast", "SlotSeries", "forecast_flex", "forecast_load"]
