"""Helpers of the drills (bad input, connection abuse, overload): a raw HTTP/1.1 client over TLS,
the server's resident memory, and the check that a patch changed only what was decided."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any

import jsonpatch

from webhook.core.mutate import AUDIT_ANNOTATION, ORIGINAL_IMAGES_ANNOTATION, escape_pointer
from webhook.core.rewrite import Reason, RewriteRules, decide


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def post(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    """One HTTP/1.1 request, keep-alive, exactly as bytes on the wire."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> Answer:
    started = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body, time.perf_counter() - started)


async def connect(port: int, context: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")


IMAGE_PATH = re.compile(r"\A/spec/(initContainers|containers|ephemeralContainers)/(\d+)/image\Z")
OUR_KEYS = (ORIGINAL_IMAGES_ANNOTATION, AUDIT_ANNOTATION)


def check_answer(review: dict[str, Any], answer: dict[str, Any], rules: RewriteRules, secret: str) -> str:
    """Assert `answer` is a valid AdmissionReview for `review` whose patch applies to the object and
    changes nothing but what was decided; return "patched" or "allowed"."""
    assert answer["apiVersion"] == "admission.k8s.io/v1", answer
    assert answer["kind"] == "AdmissionReview", answer
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    if "patch" not in response:
        assert "patchType" not in response
        return "allowed"
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"], validate=True))
    assert isinstance(patch, list)
    assert patch
    pod = review["request"]["object"]
    patched = jsonpatch.apply_patch(pod, patch)
    assert_only_decided_changes(pod, patch, patched, rules, secret)
    return "patched"


def assert_only_decided_changes(
    pod: dict[str, Any], patch: list[dict[str, Any]], patched: dict[str, Any], rules: RewriteRules, secret: str
) -> None:
    """Undo each operation by what the original held; what remains must equal the original exactly."""
    restored = copy.deepcopy(patched)
    for operation in patch:
        path, value = operation["path"], operation.get("value")
        image = IMAGE_PATH.match(path)
        if image:
            assert operation["op"] == "replace"
            field, index = image.group(1), int(image.group(2))
            original = pod["spec"][field][index]["image"]
            decision = decide(original, rules)
            assert decision.reason is Reason.REWRITTEN, (original, value)
            assert value == decision.image, (original, value)
            restored["spec"][field][index]["image"] = original
        elif path == "/spec/imagePullSecrets":
            assert operation["op"] == "add"
            assert value == [{"name": secret}]
            assert not pod["spec"].get("imagePullSecrets")
            _restore(restored["spec"], pod["spec"], "imagePullSecrets")
        elif path == "/spec/imagePullSecrets/-":
            assert operation["op"] == "add"
            assert value == {"name": secret}
            restored["spec"]["imagePullSecrets"].pop()
        elif path == "/metadata":
            assert operation["op"] == "add"
            assert pod.get("metadata") is None
            assert set(value) == {"annotations"}
            assert set(value["annotations"]) <= set(OUR_KEYS)
            _restore(restored, pod, "metadata")
        elif path == "/metadata/annotations":
            assert operation["op"] == "add"
            assert pod["metadata"].get("annotations") is None
            assert set(value) <= set(OUR_KEYS)
            _restore(restored["metadata"], pod["metadata"], "annotations")
        elif path in {f"/metadata/annotations/{escape_pointer(key)}" for key in OUR_KEYS}:
            assert operation["op"] == "add"
            assert isinstance(value, str)
            key = next(k for k in OUR_KEYS if path.endswith(escape_pointer(k)))
            _restore(restored["metadata"]["annotations"], pod["metadata"]["annotations"], key)
        else:
            raise AssertionError(f"an operation on a field nothing decided: {operation}")
    assert restored == pod


def _restore(target: dict[str, Any], original: dict[str, Any], key: str) -> None:
    if key in original:
        target[key] = copy.deepcopy(original[key])
    else:
        del target[key]
