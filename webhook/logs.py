"""Structured JSON logs: one object per line, the event name plus its fields.

Callers pass fields with `extra={"fields": {...}}`; nothing here knows about
tokens, and no caller hands one in.

`--log-level` sets the level of our own loggers (`ecr_pullthrough.*`) only.
Libraries never log below INFO, and the ones that see credentials on the wire
never below WARNING: botocore's debug log prints whole responses, the
GetAuthorizationToken one included, and urllib3's and the Kubernetes client's
print request details.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        document.update(getattr(record, "fields", {}))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        # orjson: one admission line costs microseconds, not more than the decision it reports.
        try:
            return orjson.dumps(document, default=str).decode()
        except TypeError:  # a lone surrogate, a non-string key, an integer past 64 bits
            return json.dumps(document, default=str, separators=(",", ":"))


OURS = "ecr_pullthrough"
# Loggers that print credentials, tokens or request bodies at DEBUG (and INFO, for some).
QUIET = ("botocore", "boto3", "s3transfer", "urllib3", "kubernetes")


def configure(level: str) -> None:
    """Send every logger's records to stderr as JSON lines (uvicorn's included); `level` applies to ours only."""
    # The lines carry none of the caller's file and line, thread or process: do not compute them
    # for every record (the logging HOWTO's "Optimization" section; the webhook logs every admission).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    ours = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(ours, logging.INFO))
    logging.getLogger(OURS).setLevel(ours)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(ours, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
