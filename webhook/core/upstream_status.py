"""The upstream status document: which upstreams the controller verified, why not, and when.

The controller publishes it in a ConfigMap; the webhook reads it from the
mounted file and rewrites an upstream's images only while it is verified.
Unknown status (no document, unreadable, stale) means "do not rewrite".
Pure: no I/O.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

DOCUMENT_KEY = "status.json"
VERSION = 1  # fields are only ever added, so old and new readers agree during a rolling upgrade

# Hysteresis for transient errors (throttling, 5xx, timeouts): a verified upstream is held verified
# until this many consecutive transient failures span at least HOLD_SECONDS; meanwhile it is
# checked again every HOLD_RETRY_SECONDS. A definitive error flips it at once.
HOLD_FAILURES = 3
HOLD_SECONDS = 300.0
HOLD_RETRY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    upstream: str  # the registry host as the webhook names it: docker.io, ghcr.io, ...
    prefix: str
    verified: bool
    # One sentence: what is wrong and what to fix. "" when verified, unless held (then the transient error).
    reason: str
    # The last success while verified (a held upstream keeps it); the verdict's time otherwise.
    checked_at: datetime.datetime
    # While a verified upstream is held through transient errors: since when, and how many in a row.
    held_since: datetime.datetime | None = None
    transient_failures: int = 0


@dataclass(frozen=True, slots=True)
class StatusDocument:
    checked_at: datetime.datetime
    upstreams: tuple[UpstreamStatus, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": VERSION,
                "checkedAt": self.checked_at.isoformat(),
                "upstreams": {
                    s.upstream: {
                        "prefix": s.prefix,
                        "verified": s.verified,
                        "reason": s.reason,
                        "checkedAt": s.checked_at.isoformat(),
                    }
                    | (
                        {"heldSince": s.held_since.isoformat(), "transientFailures": s.transient_failures}
                        if s.held_since is not None
                        else {}
                    )
                    for s in self.upstreams
                },
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def parse(cls, text: str) -> StatusDocument:
        """Raise ValueError with a reason when `text` is not a status document."""
        try:
            raw: Any = json.loads(text)
            if raw.get("version") != VERSION:
                raise ValueError(f"unknown status document version {raw.get('version')!r}")
            statuses = tuple(
                UpstreamStatus(
                    upstream=str(upstream),
                    prefix=str(entry["prefix"]),
                    verified=entry["verified"] is True,
                    reason=str(entry.get("reason", "")),
                    checked_at=_time(entry["checkedAt"]),
                    held_since=_time(entry["heldSince"]) if entry.get("heldSince") else None,
                    transient_failures=int(entry.get("transientFailures") or 0),
                )
                for upstream, entry in raw["upstreams"].items()
            )
            return cls(checked_at=_time(raw["checkedAt"]), upstreams=statuses)
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not an upstream status document: {error}") from None


def _time(value: Any) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return moment


@dataclass(frozen=True, slots=True)
class Verification:
    """What the webhook may rewrite right now: the verified upstreams, and why the others are not."""

    verified: frozenset[str]
    reasons: dict[str, str]
    unknown: str = ""  # set when there is no usable document at all

    def reason_for(self, upstream: str) -> str:
        if self.unknown:
            return self.unknown
        return self.reasons.get(upstream) or f"{upstream} is not in the upstream status"


def verification(
    document: StatusDocument | None, now: datetime.datetime, max_age: datetime.timedelta, problem: str = ""
) -> Verification:
    """The upstreams to trust at `now`: none when the document is missing, unreadable or stale."""
    if document is None:
        return Verification(frozenset(), {}, problem or "no upstream status yet")
    age = now - document.checked_at
    if age > max_age:
        return Verification(frozenset(), {}, f"upstream status is stale: last checked {int(age.total_seconds())}s ago")
    # A verified upstream held through transient errors keeps its last success time: the maximum
    # age bounds how long it is trusted without one.
    fresh = {s.upstream for s in document.upstreams if s.verified and now - s.checked_at <= max_age}
    reasons = {s.upstream: s.reason for s in document.upstreams if not s.verified}
    for s in document.upstreams:
        if s.verified and s.upstream not in fresh:
            last = int((now - s.checked_at).total_seconds())
            reasons[s.upstream] = f"no successful check for {last}s" + (f" ({s.reason})" if s.reason else "")
    return Verification(verified=frozenset(fresh), reasons=reasons)


@dataclass(frozen=True, slots=True)
class Check:
    """One verification's result for one upstream: no problem, or a problem that is transient or definitive."""

    upstream: str
    prefix: str
    problem: str | None = None
    transient: bool = False


def advance(previous: UpstreamStatus | None, check: Check, now: datetime.datetime) -> UpstreamStatus:
    """The upstream's new status, given its last one and a fresh check (the hysteresis lives here).

    - success: verified, checked now;
    - definitive problem (no rule, access denied, a bad credential, 401/403/404 on the probe):
      unverified at once;
    - transient problem (throttling, 5xx, timeouts, no credentials during an IRSA refresh): an
      upstream verified before stays verified, keeping its last success time, until HOLD_FAILURES
      such failures in a row span HOLD_SECONDS; one not verified before stays unverified.
    """
    if check.problem is None:
        return UpstreamStatus(check.upstream, check.prefix, True, "", now)
    held = previous is not None and previous.verified and previous.prefix == check.prefix
    if not check.transient or not held or previous is None:
        return UpstreamStatus(check.upstream, check.prefix, False, check.problem, now)
    since = previous.held_since or now
    failures = previous.transient_failures + 1
    if failures >= HOLD_FAILURES and (now - since).total_seconds() >= HOLD_SECONDS:
        reason = f"{check.problem} (transient errors since {since.isoformat(timespec='seconds')}, {failures} in a row)"
        return UpstreamStatus(check.upstream, check.prefix, False, reason, now)
    return UpstreamStatus(check.upstream, check.prefix, True, check.problem, previous.checked_at, since, failures)
