"""The home's own page, served by the agent (`[web]`, docs/operations.md "The local web page"):
the household's view (power, today's energy, DR events, earnings) and the installer's (devices,
buses, counters, the last `drgw doctor`), live by server-sent events, read-only.

`LiveState` watches samples and DR messages; `HomeView` builds a snapshot from the running parts;
`WebPage` serves it. gateway/agent/wiring.py builds the three when the config has a `[web]` table.
"""

from gateway.agent.web.live import LiveState
from gateway.agent.web.server import WebPage
from gateway.agent.web.view import HomeView, Sources

__all__ = ["HomeView", "LiveState", "Sources", "WebPage"]
