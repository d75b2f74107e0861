"""The upstream status document: which upstreams the controller verified, why not, and when.

The controller publishes it in a ConfigMap; the webhook reads it from the
mounted file and rewrites an upstream's images only while it is verified.
Unknown status (no document, unreadable, stale) means "do not rewrite".

An entry is bound to what it verified: the registry, the prefix and the
pull-secret mode (`secret`: with the token the controller puts in every
namespace; `node-role`: with the nodes' own role). The webhook trusts an entry
only when all three equal its own settings, so a `helm upgrade` that changes
any of them never rides on a verification made for the old target. The
document stays at version 1 and its fields are only ever added: a reader
ignores keys it does not know, so old and new pods read each other's documents
during a rolling upgrade (an entry without a registry, written before it was
recorded, is not trusted by a reader that checks it).
Pure: no I/O.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# How pulls through the cache are authorised: with the pull secret the controller keeps in every
# namespace, or with the nodes' own role (the kubelet's ECR credential provider).
PullSecretMode = Literal["secret", "node-role"]
WITH_PULL_SECRET: PullSecretMode = "secret"

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
    # The ECR registry host the verification was made against ("" in documents written before 0.2.0).
    registry: str = ""
    # While a verified upstream is held through transient errors: since when, and how many in a row.
    held_since: datetime.datetime | None = None
    transient_failures: int = 0
    # While real pulls through the cache fail (the pull-outcome guard): since when, the evidence in
    # one sentence, and the one pod in `trial_one_in` the webhook still rewrites so recovery shows.
    degraded_since: datetime.datetime | None = None
    degraded_reason: str = ""
    trial_one_in: int = 0
    # How the pulls it proved will be made: with our pull secret ("secret", also every document written
    # before the mode existed) or with the nodes' own role ("node-role").
    pull_secret_mode: str = WITH_PULL_SECRET


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
                        "registry": s.registry,
                        "pullSecretMode": s.pull_secret_mode,
                        "verified": s.verified,
                        "reason": s.reason,
                        "checkedAt": s.checked_at.isoformat(),
                    }
                    | (
                        {"heldSince": s.held_since.isoformat(), "transientFailures": s.transient_failures}
                        if s.held_since is not None
                        else {}
                    )
                    | (
                        {
                            "degradedSince": s.degraded_since.isoformat(),
                            "degradedReason": s.degraded_reason,
                            "trialOneIn": s.trial_one_in,
                        }
                        if s.degraded_since is not None
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
                    registry=str(entry.get("registry", "")),
                    held_since=_time(entry["heldSince"]) if entry.get("heldSince") else None,
                    transient_failures=int(entry.get("transientFailures") or 0),
                    degraded_since=_time(entry["degradedSince"]) if entry.get("degradedSince") else None,
                    degraded_reason=str(entry.get("degradedReason", "")),
                    trial_one_in=int(entry.get("trialOneIn") or 0),
                    pull_secret_mode=str(entry.get("pullSecretMode") or WITH_PULL_SECRET),
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
    # Degraded upstreams (verified, but real pulls fail) -> rewrite one pod in this many, as a trial.
    trial: Mapping[str, int] = field(default_factory=dict)

    def with_trial(self, upstreams: frozenset[str]) -> Verification:
        """This verification for a trial pod: `upstreams` (degraded ones) count as verified."""
        if not upstreams:
            return self
        reasons = {u: r for u, r in self.reasons.items() if u not in upstreams}
        return Verification(self.verified | upstreams, reasons, self.unknown, self.trial)

    def reason_for(self, upstream: str) -> str:
        if self.unknown:
            return self.unknown
        return self.reasons.get(upstream) or f"{upstream} is not in the upstream status"


@dataclass(frozen=True, slots=True)
class Target:
    """What the reader's own settings say must have been verified: its registry, and a prefix per upstream."""

    registry: str
    prefixes: Mapping[str, str] = field(default_factory=dict)  # upstream (docker.io, ghcr.io, ...) -> prefix
    pull_secret_mode: str = WITH_PULL_SECRET

    def mismatch(self, status: UpstreamStatus) -> str | None:
        """Why `status` says nothing about this target, or None when it is about this target."""
        wanted = self.prefixes.get(status.upstream)
        here = f"{self.registry}/{wanted}" if wanted is not None else self.registry
        waiting = f"waiting for the controller to verify {status.upstream} through {here}"
        verified = f"the upstream status verified {status.upstream}"
        if not status.registry:
            return (
                "the upstream status does not name the registry it verified "
                f"(written by an older controller): {waiting}"
            )
        if status.registry != self.registry:
            return f"{verified} for the registry {status.registry}, not {self.registry}: {waiting}"
        if wanted is not None and status.prefix != wanted:
            return f"{verified} under the prefix {status.prefix}, not {wanted}: {waiting}"
        if status.pull_secret_mode != self.pull_secret_mode:
            return f"{verified} in pull-secret mode {status.pull_secret_mode}, not {self.pull_secret_mode}: " + (
                "waiting for the controller to verify it with the nodes' own role"
                if self.pull_secret_mode == "node-role"
                else "waiting for the controller to put the pull secret in every namespace and verify it"
            )
        return None


def verification(
    document: StatusDocument | None,
    now: datetime.datetime,
    max_age: datetime.timedelta,
    problem: str = "",
    *,
    target: Target | None = None,
) -> Verification:
    """The upstreams to trust at `now`: none when the document is missing, unreadable or stale.

    With `target`, an entry is trusted only when it was verified for that registry and prefix.
    """
    if document is None:
        return Verification(frozenset(), {}, problem or "no upstream status yet")
    age = now - document.checked_at
    if age > max_age:
        return Verification(frozenset(), {}, f"upstream status is stale: last checked {int(age.total_seconds())}s ago")
    # A verified upstream held through transient errors keeps its last success time: the maximum
    # age bounds how long it is trusted without one.
    verified: set[str] = set()
    reasons: dict[str, str] = {}
    trial: dict[str, int] = {}
    for status in document.upstreams:
        mismatch = target.mismatch(status) if target is not None else None
        if mismatch is not None:
            reasons[status.upstream] = mismatch
        elif not status.verified:
            reasons[status.upstream] = status.reason
        elif now - status.checked_at > max_age:
            last = int((now - status.checked_at).total_seconds())
            reasons[status.upstream] = f"no successful check for {last}s" + (
                f" ({status.reason})" if status.reason else ""
            )
        elif status.degraded_since is not None:
            reasons[status.upstream] = f"degraded: {status.degraded_reason}"
            trial[status.upstream] = status.trial_one_in
        else:
            verified.add(status.upstream)
    return Verification(verified=frozenset(verified), reasons=reasons, trial=trial)


@dataclass(frozen=True, slots=True)
class Check:
    """One verification's result for one upstream: no problem, or a problem that is transient or definitive."""

    upstream: str
    prefix: str
    problem: str | None = None
    transient: bool = False


def advance(
    previous: UpstreamStatus | None,
    check: Check,
    now: datetime.datetime,
    registry: str = "",
    pull_secret_mode: str = WITH_PULL_SECRET,
) -> UpstreamStatus:
    """The upstream's new status, given its last one and a fresh check (the hysteresis lives here).

    - success: verified, checked now;
    - definitive problem (no rule, access denied, a bad credential, 401/403/404 on the probe):
      unverified at once;
    - transient problem (throttling, 5xx, timeouts, no credentials during an IRSA refresh): an
      upstream verified before stays verified, keeping its last success time, until HOLD_FAILURES
      such failures in a row span HOLD_SECONDS; one not verified before stays unverified.

    Every entry records `registry` and `pull_secret_mode`; a hold is only for the same registry, prefix
    and mode.
    """
    mode = pull_secret_mode
    if check.problem is None:
        return UpstreamStatus(check.upstream, check.prefix, True, "", now, registry, pull_secret_mode=mode)
    held = (
        previous is not None
        and previous.verified
        and (previous.prefix, previous.registry, previous.pull_secret_mode) == (check.prefix, registry, mode)
    )
    if not check.transient or not held or previous is None:
        return UpstreamStatus(check.upstream, check.prefix, False, check.problem, now, registry, pull_secret_mode=mode)
    since = previous.held_since or now
    failures = previous.transient_failures + 1
    if failures >= HOLD_FAILURES and (now - since).total_seconds() >= HOLD_SECONDS:
        reason = f"{check.problem} (transient errors since {since.isoformat(timespec='seconds')}, {failures} in a row)"
        return UpstreamStatus(check.upstream, check.prefix, False, reason, now, registry, pull_secret_mode=mode)
    return UpstreamStatus(
        check.upstream,
        check.prefix,
        True,
        check.problem,
        previous.checked_at,
        registry,
        since,
        failures,
        pull_secret_mode=mode,
    )
