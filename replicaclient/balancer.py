"""Which replica gets a ``first`` call: power of two choices over peak-EWMA cost.

Theory of operation
-------------------
Each replica has a latency estimate and a count of requests in flight. Its *cost* is the
estimate times (outstanding + 1), as in Finagle's and tower's ``PeakEwma`` balancers:

- An answer slower than the current estimate replaces it at once (the *peak*: a replica
  that turns slow loses traffic on its first slow answer); a faster one pulls it down
  with weight ``1 - exp(-dt / tau)``, ``dt`` being the time since the replica's previous
  event, so ``tau`` is the estimate's memory whatever the request rate.
- While a replica has nothing in flight its estimate decays toward zero with the same
  time constant. A replica that was slow once is therefore tried again after a while,
  and its answer then measures it afresh. Without this, a replica that is not picked
  keeps its old cost for ever and never gets traffic again. The estimate does not decay
  while requests are in flight: a replica that stalls must not look cheaper the longer
  it stalls (with decay toward zero and only the ``outstanding + 1`` factor against it,
  it would soon take every call).
- ``tau`` is ``memory`` round trips of the service: ``memory`` times the mean latency of
  all answers (from any replica). Finagle and tower use a fixed 10 s; on a service that
  answers in a millisecond that is ten thousand round trips, and one slow answer in a
  random 5% would keep a replica out for tens of seconds (measured: 1,990 of 2,000 calls
  went to one replica). A memory counted in round trips means the same on loopback and
  across a WAN.
- A replica never measured costs nothing while idle (so new replicas get tried) and
  ``PENALTY`` while it has a request in flight (so a new or silent replica does not take
  every call before its first answer), as Finagle does.

A pick takes two different candidates at random and uses the cheaper (the "power of two
choices", as Finagle's and tower's P2C balancers): load spreads over replicas of equal
cost, a replica that is cheap but not the cheapest still gets calls, and the most
expensive candidate is never the first choice. The others follow cheapest first; they
are the hedge and retry targets.

Time and randomness are injected: ``now`` is an argument, ``rng`` a ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

MEMORY = 10.0
"""Default memory of the latency estimates, in mean round trips. A replica whose answer
was ten times the others' is tried again about ``memory * ln 10`` (23) round trips later;
one that stays that slow gets roughly one call in that many."""

PENALTY = 1e9
"""Cost of a replica with requests in flight and no answer yet (in seconds: more than
any measured replica costs)."""

_TYPICAL_WEIGHT = 1 / 64
"""Weight of one answer in the mean latency that sets ``tau``."""

_MIN_TAU = 1e-9
"""(A clock that never moves measures latencies of 0.)"""


class Load:
    """What the balancer knows of one replica."""

    __slots__ = ("estimate", "outstanding", "stamp")

    def __init__(self) -> None:
        self.estimate: float | None = None
        """Peak-EWMA latency in seconds as of ``stamp`` (None: never measured)."""
        self.stamp = 0.0
        """When the estimate was last set: an answer, a failure, or a request sent to
        an idle replica (the decay until then is applied and the estimate held)."""
        self.outstanding = 0


class Balancer:
    def __init__(self, memory: float = MEMORY, rng: random.Random | None = None) -> None:
        if memory <= 0:
            raise ValueError("memory must be > 0")
        self.memory = memory
        self.rng = rng or random.Random()
        self.loads: dict[str, Load] = {}
        self.typical: float | None = None
        """Mean latency of recent answers from all replicas, in seconds."""
        self.tau = _MIN_TAU
        """The estimates' time constant, ``memory * typical`` seconds."""

    # -- what happened

    def add(self, replica: str) -> Load:
        found = self.loads.get(replica)
        if found is None:
            found = self.loads[replica] = Load()
        return found

    def remove(self, replica: str) -> None:
        self.loads.pop(replica, None)

    def sent(self, replica: str, now: float) -> None:
        load = self.loads.get(replica)
        if load is None:
            load = self.add(replica)
        if load.outstanding == 0 and load.estimate is not None:
            load.estimate = self._decayed(load, now)
            load.stamp = now
        load.outstanding += 1

    def answered(self, replica: str, seconds: float, now: float) -> None:
        """An answer that took ``seconds`` arrived at ``now``."""
        typical = self.typical
        typical = seconds if typical is None else \
            typical + _TYPICAL_WEIGHT * (seconds - typical)
        self.typical = typical
        self.tau = max(_MIN_TAU, self.memory * typical)
        load = self.loads.get(replica)
        if load is None:
            return
        estimate = self._decayed(load, now)
        if estimate is None or seconds >= estimate:
            load.estimate = seconds
        else:
            kept = math.exp(-max(0.0, now - load.stamp) / self.tau)
            load.estimate = seconds + kept * (estimate - seconds)
        load.stamp = now
        if load.outstanding > 0:
            load.outstanding -= 1

    def failed(self, replica: str, seconds: float, now: float) -> None:
        """A request failed after ``seconds``. It is no longer in flight, and its time
        counts only as a peak: a failure is no evidence that a replica is fast."""
        load = self.loads.get(replica)
        if load is None:
            return
        estimate = self._decayed(load, now)
        if estimate is not None:
            load.estimate = max(estimate, seconds)
            load.stamp = now
        if load.outstanding > 0:
            load.outstanding -= 1

    # -- what it thinks

    def _decayed(self, load: Load, now: float) -> float | None:
        estimate = load.estimate
        if estimate is None or load.outstanding:
            return estimate
        return estimate * math.exp(-max(0.0, now - load.stamp) / self.tau)

    def estimate(self, replica: str, now: float) -> float | None:
        """The latency estimate at ``now`` (None if never measured)."""
        load = self.loads.get(replica)
        return None if load is None else self._decayed(load, now)

    def cost(self, replica: str, now: float) -> float:
        load = self.loads.get(replica)
        if load is None:
            return 0.0
        estimate = load.estimate
        if estimate is None:
            return PENALTY if load.outstanding else 0.0
        if load.outstanding:
            return estimate * (load.outstanding + 1)
        return estimate * math.exp(-max(0.0, now - load.stamp) / self.tau)

    def order(self, candidates: Sequence[str], now: float) -> list[str]:
        """Candidates in the order to use them: the power-of-two pick, then the others
        cheapest first (ties in the order given)."""
        n = len(candidates)
        if n < 2:
            return list(candidates)
        # cost() inlined: this runs once per call, ahead of everything else.
        loads, tau, exp = self.loads, self.tau, math.exp
        costs = []
        for name in candidates:
            load = loads.get(name)
            if load is None:
                costs.append(0.0)
                continue
            estimate, outstanding = load.estimate, load.outstanding
            if estimate is None:
                costs.append(PENALTY if outstanding else 0.0)
            elif outstanding:
                costs.append(estimate * (outstanding + 1))
            else:
                costs.append(estimate * exp(min(0.0, load.stamp - now) / tau))
        random_ = self.rng.random
        i = int(random_() * n)
        j = int(random_() * (n - 1))
        if j >= i:
            j += 1
        # The pair is in random order, so a tie goes to either with even odds.
        if costs[j] < costs[i]:
            i, j = j, i
        if n == 2:
            return [candidates[i], candidates[j]]
        rest = sorted(range(n), key=costs.__getitem__)
        return [candidates[i]] + [candidates[k] for k in rest if k != i]


__all__ = ["MEMORY", "PENALTY", "Balancer", "Load"]
