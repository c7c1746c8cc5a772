"""Fault rules and the book that decides, per request, which of them fire.

Rules are tried in order. A `latency` rule that fires adds its delay and lets the next
rules be tried; any other rule that fires decides the request's fate and ends the search.
A rule fires when its filters match, its `count` is not used up, and a draw of the
proxy's seeded RNG falls under its `probability` (no draw at probability 1, so adding a
certain rule never shifts the random sequence of the others).
"""

from __future__ import annotations

import fnmatch
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultMode = Literal["refuse", "unavailable", "rate_limited", "latency", "drop"]
MODES: tuple[FaultMode, ...] = ("refuse", "unavailable", "rate_limited", "latency", "drop")


class FaultRule(BaseModel):
    """One fault: what happens, how often, to which requests."""

    model_config = ConfigDict(extra="forbid")

    mode: FaultMode = Field(
        description="refuse: reset the connection without forwarding or answering; "
        "unavailable: answer `status` (503) without forwarding; rate_limited: answer 429 + "
        "Retry-After without forwarding; latency: wait `delay` s, then go on; drop: forward, "
        "let the upstream answer, and reset the caller's connection (after `hang` s if set)"
    )
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1, description="fire this many times, then stop")
    path: str | None = Field(default=None, description="glob on the path, e.g. /v1/invoices*")
    method: str | None = Field(default=None, description="HTTP method, e.g. POST")
    body_contains: str | None = Field(
        default=None, description="substring of the request body, e.g. a JSON-RPC method name"
    )
    delay: float = Field(default=0.0, ge=0.0, le=600.0, description="latency: seconds")
    status: int = Field(default=503, ge=500, le=599, description="unavailable: the status")
    retry_after: float = Field(default=1.0, ge=0.0, description="rate_limited: seconds")
    hang: float | None = Field(
        default=None,
        ge=0.0,
        le=3600.0,
        description="drop: hold the caller without an answer this long (its timeout fires)",
    )

    @model_validator(mode="after")
    def _latency_has_a_delay(self) -> FaultRule:
        if self.mode == "latency" and self.delay <= 0:
            raise ValueError("a latency rule needs a positive delay")
        return self

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is not None and not fnmatch.fnmatchcase(path, self.path):
            return False
        return self.body_contains is None or self.body_contains.encode() in body


@dataclass
class _Entry:
    id: int
    rule: FaultRule
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.rule.count is not None and self.fired >= self.rule.count

    def describe(self) -> dict[str, Any]:
        remaining = None if self.rule.count is None else self.rule.count - self.fired
        return {
            "id": self.id,
            **self.rule.model_dump(exclude_none=True),
            "fired": self.fired,
            "remaining": remaining,
        }


@dataclass(frozen=True)
class Decision:
    """What to do with one request: wait `delay`, then `fault` (None: forward normally)."""

    delay: float = 0.0
    fault: FaultRule | None = None


@dataclass
class RuleBook:
    """The rules, the RNG and the counters of one proxy (used from its event loop only)."""

    seed: int | None = None
    _entries: list[_Entry] = field(default_factory=list)
    _next_id: int = 1
    _rng: random.Random = field(init=False)
    requests: int = 0
    forwarded: int = 0
    upstream_errors: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def add(self, rule: FaultRule) -> dict[str, Any]:
        entry = _Entry(self._next_id, rule)
        self._next_id += 1
        self._entries.append(entry)
        return entry.describe()

    def replace(self, rules: list[FaultRule]) -> list[dict[str, Any]]:
        self._entries.clear()
        return [self.add(rule) for rule in rules]

    def clear(self) -> None:
        self._entries.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [entry.describe() for entry in self._entries]

    def decide(self, method: str, path: str, body: bytes) -> Decision:
        self.requests += 1
        delay = 0.0
        for entry in self._entries:
            rule = entry.rule
            if entry.exhausted or not rule.matches(method, path, body):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            entry.fired += 1
            self.faults[rule.mode] += 1
            if rule.mode == "latency":
                delay += rule.delay
                continue
            return Decision(delay, rule)
        return Decision(delay, None)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "forwarded": self.forwarded,
            "upstream_errors": self.upstream_errors,
            "faults": {mode: self.faults.get(mode, 0) for mode in MODES},
            "seed": self.seed,
        }

    def reset_stats(self) -> None:
        self.requests = self.forwarded = self.upstream_errors = 0
        self.faults.clear()
