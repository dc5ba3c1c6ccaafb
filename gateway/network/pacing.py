"""Pure pacing logic for the link: jittered exponential reconnect backoff and token-bucket caps.

No clock and no randomness of its own: the caller passes `now` (seconds, monotonic) and a uniform
random number, so both are tested exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before reconnect attempt n (0-based) = uniform(0.5, 1.0) x min(cap, base x 2**n).

    "Equal jitter" (AWS architecture blog, 2015): never zero, so a fleet that lost its broker at the
    same moment spreads out instead of reconnecting in lock step. The attempt count resets once a
    session stayed up for `stable_s`.
    """

    base_s: float = 0.5
    cap_s: float = 60.0
    stable_s: float = 30.0

    def delay(self, attempt: int, uniform: float) -> float:
        ceiling = min(self.cap_s, self.base_s * (2.0 ** min(attempt, 62)))
        return ceiling * (0.5 + 0.5 * uniform)


@dataclass(slots=True)
class Backoff:
    """Attempt counter driven by session outcomes."""

    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    attempt: int = 0

    def after_session(self, *, up_since: float | None, now: float) -> None:
        """Record the end of a session (up_since None: the connect itself failed)."""
        if up_since is not None and now - up_since >= self.policy.stable_s:
            self.attempt = 0

    def next_delay(self, uniform: float) -> float:
        d = self.policy.delay(self.attempt, uniform)
        self.attempt += 1
        return d


@dataclass(slots=True)
class TokenBucket:
    """A rate cap of `rate` units/s with bursts up to `burst` units; rate <= 0 means no cap."""

    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self.stamp is None:
            self.tokens = self.burst
        elif now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds to wait before `cost` units may go (0.0: now). A cost above burst waits for
        the bucket to be full and then drives it negative, so huge messages still pass."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        need = min(cost, self.burst)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, cost: float, now: float) -> None:
        if self.rate <= 0:
            return
        self._refill(now)
        self.tokens -= cost
