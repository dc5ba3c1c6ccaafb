"""OpenADR 2.0b: the gateway's VEN (docs/openadr.md). `ven` imports openleadr only when built."""

from gateway.network.openadr.settings import OpenAdrConfig, parse_openadr
from gateway.network.openadr.signals import OadrEventError, OadrRequest, Target, read_event, target

__all__ = ["OadrEventError", "OadrRequest", "OpenAdrConfig", "Target", "parse_openadr", "read_event",
           "target"]
