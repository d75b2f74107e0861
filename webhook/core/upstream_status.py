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
VERSION = 1


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    upstream: str  # the registry host as the webhook names it: docker.io, ghcr.io, ...
    prefix: str
    verified: bool
    reason: str  # one sentence: what is wrong and what to fix ("" when verified)
    checked_at: datetime.datetime


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
                )
                for upstream, entry in raw["upstreams"].items()
            )
            return cls(checked_at=_time(raw["checkedAt"]), upstreams=statuses)
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as error:
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
    return Verification(
        verified=frozenset(s.upstream for s in document.upstreams if s.verified),
        reasons={s.upstream: s.reason for s in document.upstreams if not s.verified},
    )
