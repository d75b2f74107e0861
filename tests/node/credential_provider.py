"""A kubelet image credential provider plugin for the node test bed: the node's own ECR credentials.

On EKS the kubelet runs `ecr-credential-provider`, which asks ECR for a token with
the node role and hands it over through the kubelet's exec plugin protocol
(`credentialprovider.kubelet.k8s.io/v1`): a CredentialProviderRequest on stdin,
a CredentialProviderResponse on stdout. This one plays that part with the token
the node test wrote to `NODE_TOKEN_FILE` (issued by the fake ECR to the node
role's key); with no such file it offers no credentials, so the other node tests
pull only with their pull secret. Nothing is cached (`cacheDuration: 0s`), so
every pull asks again and a revoked token shows at once. Each request is logged
to `NODE_PROVIDER_LOG` (the image, and whether a token was offered; never the token).

Standard library only: the kubelet runs it through a two-line shell wrapper with the bed's Python.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

API_VERSION = "credentialprovider.kubelet.k8s.io/v1"


def respond(request: dict[str, object], token: str, host: str) -> dict[str, object]:
    auth = {host: {"username": "AWS", "password": token}} if token else {}
    return {
        "apiVersion": API_VERSION,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": "0s",
        "auth": auth,
    }


def main() -> int:
    request = json.load(sys.stdin)
    token_file = Path(os.environ["NODE_TOKEN_FILE"])
    token = token_file.read_text().strip() if token_file.exists() else ""
    host = os.environ["NODE_ECR_HOST"]
    with open(os.environ["NODE_PROVIDER_LOG"], "a") as log:
        log.write(json.dumps({"image": request.get("image"), "offered": bool(token)}) + "\n")
    json.dump(respond(request, token, host), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
