"""The replicas of a task's service: a circuit breaker per URL and client-side balancing."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum


class CircuitState(Enum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    """Traffic flows."""
    OPEN = "open"
    """Too many consecutive failures: no traffic until the cool-down ends."""
    HALF_OPEN = "half_open"
    """Cool-down over: one probe request may go through to test the URL."""


class CircuitBreaker:
    """Stops sending traffic to a service URL that keeps failing, and tests it again later.

    After `failure_threshold` consecutive failures the circuit opens for `open_seconds`;
    then one request is let through as a probe. Its success closes the circuit, its failure
    opens it for another `open_seconds`. Any answer from the service counts as a success,
    and a slow one (a timeout) as neither: the breaker is about reaching the process, not
    about what it answers or how fast.
    """

    def __init__(
        self,
        failure_threshold: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self.consecutive_failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        """The current state (open turns half-open by itself once the cool-down is over)."""
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() < self._opened_at + self.open_seconds:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def can_send(self) -> bool:
        """Whether a request may go to this URL now (without claiming the probe)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        return state is CircuitState.HALF_OPEN and not self._probe_in_flight

    def claim(self) -> None:
        """Call right before sending: in half-open state the request becomes the probe."""
        if self.state is CircuitState.HALF_OPEN:
            self._probe_in_flight = True

    def record_success(self) -> None:
        """The service answered: close the circuit."""
        self.consecutive_failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def record_failure(self) -> None:
        """Not reached (refused, not opened in time, broken): count it, open the circuit if
        due."""
        self.consecutive_failures += 1
        if self._probe_in_flight or (
            self._opened_at is None and self.consecutive_failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
        self._probe_in_flight = False

    def release(self) -> None:
        """The request ended with no verdict (the client went away, or the answer was too
        slow to wait for): free the probe slot."""
        self._probe_in_flight = False

    def seconds_until_probe(self) -> float:
        """Seconds until a probe may be sent (0 unless the circuit is open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - self._clock())


@dataclass
class Replica:
    """One URL serving a task, its breaker and the requests it is answering right now."""

    url: str
    breaker: CircuitBreaker
    in_flight: int = field(default=0)
    weight: float | None = field(default=None)
    """Its share of the task's traffic when the task is weighted (`upstream_weights`)."""
    current_weight: float = field(default=0.0)
    """Smooth weighted round robin's running score (weighted tasks only)."""


class ReplicaSet:
    """Picks the replica for each attempt: fewest requests in flight among those whose
    circuit lets traffic through, ties taken in turn (round robin), so an idle pool is
    spread evenly and a slow replica gets less.

    With `weights` (URL -> share, e.g. a stable model 90 and a canary 10) each attempt goes
    to a replica in proportion to its weight instead (smooth weighted round robin: the
    split is exact over every `sum(weights)` requests, not just on average), among those
    whose circuit lets traffic through; a replica of weight 0 gets no traffic at all, even
    when the others' circuits are open: it is a version taken out of service.
    """

    def __init__(
        self,
        urls: Sequence[str],
        make_breaker: Callable[[], CircuitBreaker],
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("a replica set needs at least one URL")
        if weights is not None and (set(weights) != set(urls) or sum(weights.values()) <= 0):
            raise ValueError("weights must give every URL a share, and not all zero")
        self.replicas = [
            Replica(url, make_breaker(), weight=None if weights is None else weights[url])
            for url in urls
        ]
        self.weighted = weights is not None
        self._turn = 0

    def choose(self, tried: Collection[str] = ()) -> Replica | None:
        """The replica for the next attempt, preferring ones this request has not tried;
        None when every circuit is open. The chosen replica's breaker is claimed."""
        open_to_traffic = [
            replica
            for replica in self.replicas
            if replica.breaker.can_send() and (replica.weight is None or replica.weight > 0)
        ]
        untried = [replica for replica in open_to_traffic if replica.url not in tried]
        candidates = untried or open_to_traffic
        if not candidates:
            return None
        chosen = self._by_weight(candidates) if self.weighted else self._least_busy(candidates)
        chosen.breaker.claim()
        return chosen

    def _least_busy(self, candidates: list[Replica]) -> Replica:
        count = len(self.replicas)
        # Ties go to the replica nearest after this turn's one, in configuration order.
        order = {
            replica.url: (index - self._turn) % count for index, replica in enumerate(self.replicas)
        }
        chosen = min(candidates, key=lambda replica: (replica.in_flight, order[replica.url]))
        self._turn = (self._turn + 1) % count
        return chosen

    @staticmethod
    def _by_weight(candidates: list[Replica]) -> Replica:
        # nginx's smooth weighted round robin: every candidate gains its weight, the leader
        # is chosen and pays back the total, so picks interleave (90/10: no run of 10 canary
        # requests) and replicas whose circuit is open simply sit out the round.
        for replica in candidates:
            replica.current_weight += replica.weight or 0.0
        chosen = max(candidates, key=lambda replica: replica.current_weight)
        chosen.current_weight -= sum(replica.weight or 0.0 for replica in candidates)
        return chosen

    def seconds_until_probe(self) -> float:
        """When all circuits are open: seconds until the first one lets a probe through
        (replicas of weight 0 never do)."""
        in_service = [replica for replica in self.replicas if replica.weight != 0]
        return min(replica.breaker.seconds_until_probe() for replica in in_service)
