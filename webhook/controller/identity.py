"""Who our AWS calls run as: STS GetCallerIdentity, logged at start and shown in /readyz.

A mis-bound IRSA or Pod Identity shows here as another principal (or as no
credentials at all) before it shows as a wrong token in every namespace. The
identity is information, not a readiness condition: /readyz's status code
does not depend on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from webhook.controller.ecr import AwsError, caller_identity
from webhook.controller.kube import Backoff

log = logging.getLogger("ecr_pullthrough.identity")


class CallerIdentity:
    def __init__(self, sts: Any, *, on_error: Callable[[AwsError], None] = lambda _: None) -> None:
        self._sts = sts
        self._on_error = on_error
        self._lock = threading.Lock()
        self._arn: str | None = None
        self._error = "not asked yet"

    def run(self, stop: threading.Event) -> None:
        """Ask until STS answers (with backoff), then log the identity once."""
        backoff = Backoff(2, 300)
        while not stop.is_set():
            try:
                arn = caller_identity(self._sts)
            except AwsError as error:
                self._on_error(error)
                with self._lock:
                    self._error = str(error)
                delay = backoff.next()
                log.warning(
                    "AWS caller identity unknown",
                    extra={"fields": {"error": str(error), "retryIn": round(delay, 1)}},
                )
                stop.wait(delay)
                continue
            with self._lock:
                self._arn = arn
            log.info("AWS caller identity", extra={"fields": {"arn": arn}})
            return

    def describe(self) -> dict[str, str]:
        """For /readyz's body: the ARN, or why it is not known."""
        with self._lock:
            if self._arn is not None:
                return {"awsIdentity": self._arn}
            return {"awsIdentity": "unknown", "awsIdentityError": self._error}
