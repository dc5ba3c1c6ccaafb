"""The back-off between reopen attempts of a lost serial port (gateway.device.reopen.Backoff)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.device.reopen import DEFAULT_BACKOFF, Backoff


def test_the_default_doubles_from_half_a_second_to_thirty_without_jitter_drawn() -> None:
    delays = [DEFAULT_BACKOFF.delay(n, 0.0) for n in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@given(attempt=st.integers(0, 10**7), draw=st.floats(0.0, 1.0, exclude_max=True))
def test_a_jittered_delay_stays_between_half_and_all_of_the_nominal_one(attempt: int,
                                                                         draw: float) -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, jitter=0.5)
    nominal = min(0.5 * 2.0 ** min(attempt, 64), 30.0)
    assert nominal * 0.5 <= backoff.delay(attempt, draw) <= nominal
