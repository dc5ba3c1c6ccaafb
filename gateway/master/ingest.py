"""A worker's ingest pipeline: runs of meas payloads verified on a pool of threads while the run
before is stored on the database thread.

Signature recovery is most of a record's cost (about 34 us in libsecp256k1 of ~80 us a record on
this project's test machine; bench/fleet.py --profile, docs/master.md "Measured") and coincurve calls
it through cffi, which releases the GIL for the call (cffi.readthedocs.io, "Calling C functions"),
so several threads recover in parallel while the Python parts (JSON, struct hashes, SQL) take turns;
one thread a worker costs the least CPU a record, two or more let one worker use more cores. A run is
cut into one contiguous chunk per thread; each chunk is checked whole (gateway/master/verify.py),
and the checks come back in the run's order.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor

from gateway.master.verify import MAX_QUARANTINED_BYTES, BatchCheck, Rejected, check_batch
from gateway.measurement.eip712 import Domain

log = logging.getLogger(__name__)


def default_threads() -> int:
    """One recovery thread a core (the cores this process may run on)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Verifier:
    """Checks runs of (gw, payload) on `threads` threads; `close` when the worker ends."""

    def __init__(self, domain: Domain, *, roster: Collection[str] = (), threads: int = 1) -> None:
        self.domain = domain
        self.roster = roster
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads,
                                        thread_name_prefix="drgw-master-verify")

    def check_chunk(self, chunk: Sequence[tuple[str, bytes]]) -> list[BatchCheck]:
        """Blocking: the checks of one chunk, in order. A payload the checker fails on (a bug,
        not a bad payload: those are verdicts) is kept apart as evidence, never dropped."""
        out = []
        for gw, payload in chunk:
            try:
                out.append(check_batch(gw, payload, self.domain, roster=self.roster))
            except Exception as exc:
                log.exception("ingest: could not check a payload of %s", gw)
                out.append(BatchCheck(gw, rejected=[Rejected(
                    seq=None, raw=payload[:MAX_QUARANTINED_BYTES],
                    reason=f"not verified: the checker failed ({type(exc).__name__}: {exc})")]))
        return out

    async def check(self, run: Sequence[tuple[str, bytes]]) -> list[BatchCheck]:
        """The checks of a run, its chunks on the pool's threads at once."""
        loop = asyncio.get_running_loop()
        size = -(-len(run) // self.threads)  # ceil: at most `threads` chunks
        parts = await asyncio.gather(*(
            loop.run_in_executor(self._pool, self.check_chunk, run[i:i + size])
            for i in range(0, len(run), size)))
        return [check for part in parts for check in part]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
