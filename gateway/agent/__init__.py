"""The agent behind `drgw run`: wiring, the measurement pipeline and remote control.

`Agent(config, key=...)` builds a gateway from its config and `await agent.run()` runs it until it
is stopped; the exit status RESTART asks the caller to start it again.
"""

from gateway.agent.agent import Agent
from gateway.agent.lifetime import RESTART

__all__ = ["RESTART", "Agent"]
