"""The bare-ASGI ceiling for `make bench`: uvicorn with the webhook's settings and TLS, no work.

It reads the whole body and answers a fixed AdmissionReview of the same shape as the webhook's
(a base64 patch), so the only difference from the webhook is what the webhook does per request.
Usage: python -m tests.bench.bare --tls-cert CERT --tls-key KEY --port PORT
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import uvicorn
from starlette.types import Receive, Scope, Send

from webhook.admission.connection import guarded_protocol
from webhook.admission.shedding import shed_app
from webhook.admission.tls import ReloadingContext

PATCH = [{"op": "replace", "path": f"/spec/containers/{i}/image", "value": "x" * 60} for i in range(10)]
ANSWER = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": base64.b64encode(json.dumps(PATCH).encode()).decode(),
        },
    }
).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    tls = ReloadingContext(options.tls_cert, options.tls_key)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=options.port,
        loop="uvloop",
        http=guarded_protocol(10, 10, lambda _: None, 128, shed_app(lambda: None)),
        access_log=False,
        log_level="warning",
        server_header=False,
        lifespan="off",
        ssl_context_factory=lambda _config, _default: tls.context,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
