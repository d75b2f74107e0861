"""The webhook's view of the upstream status: a mounted file, re-read when it changes.

The kubelet replaces a mounted ConfigMap's files by swapping a symlink, so the
file's identity (inode, mtime, size) is compared at most once a second, on the
request path, like the serving certificate. A missing, unreadable or stale
document means "do not rewrite", with the reason in every log line.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from pathlib import Path

from webhook.core.upstream_status import StatusDocument, Target, Verification, verification

log = logging.getLogger("ecr_pullthrough.webhook")

CHECK_INTERVAL_SECONDS = 1.0


class StatusFile:
    def __init__(self, path: Path, max_age: datetime.timedelta, target: Target | None = None) -> None:
        """`target`: the webhook's own registry and prefixes; an entry verified for another is not trusted."""
        self.path, self.max_age, self.target = path, max_age, target
        self._stamp: tuple[int, int, int] | None = None
        self._document: StatusDocument | None = None
        self._problem = "no upstream status yet"
        self._checked = -CHECK_INTERVAL_SECONDS

    def current(self) -> Verification:
        now = time.monotonic()
        if now - self._checked >= CHECK_INTERVAL_SECONDS:
            self._checked = now
            self._reload()
        return verification(
            self._document, datetime.datetime.now(datetime.UTC), self.max_age, self._problem, target=self.target
        )

    def _reload(self) -> None:
        try:
            stat = os.stat(self.path)
        except OSError:
            self._set(None, (0, 0, 0), f"no upstream status file at {self.path} yet")
            return
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            document = StatusDocument.parse(self.path.read_text())
        except (OSError, ValueError) as error:
            self._set(None, stamp, f"upstream status unreadable: {error}")
            return
        self._set(document, stamp, "")

    def _set(self, document: StatusDocument | None, stamp: tuple[int, int, int], problem: str) -> None:
        if stamp == self._stamp:
            return
        self._stamp, self._document, self._problem = stamp, document, problem
        if document is None:
            log.warning("upstream status unknown: nothing is rewritten", extra={"fields": {"reason": problem}})
        else:
            log.info(
                "upstream status loaded",
                extra={
                    "fields": {
                        "verified": sorted(s.upstream for s in document.upstreams if s.verified),
                        "unverified": {s.upstream: s.reason for s in document.upstreams if not s.verified},
                        "registries": sorted({s.registry for s in document.upstreams}),
                        "checkedAt": document.checked_at.isoformat(),
                    }
                },
            )
