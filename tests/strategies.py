"""Hypothesis strategies shared by the property tests: image references and pods."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
OTHER_ECR = ("999999999999.dkr.ecr.eu-west-1.amazonaws.com", "111111111111.dkr.ecr.cn-north-1.amazonaws.com.cn")
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
OTHER_HOSTS = (
    "ghcr.io",
    "quay.io",
    "registry.k8s.io",
    "public.ecr.aws",
    "localhost:5000",
    "[::1]:5000",
    "my.corp:8443",
)

path_components = st.from_regex(r"\A[a-z0-9]{1,8}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,8}){0,2}\Z")
paths = st.lists(path_components, min_size=1, max_size=4).map("/".join)
tags = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
digests = st.sampled_from(["sha256:" + c * 64 for c in "0123456789abcdef"])
domains = st.sampled_from(("", *DOCKER_HUB_HOSTS, *OTHER_HOSTS, REGISTRY, *OTHER_ECR))


@st.composite
def image_references(draw: st.DrawFn) -> str:
    """Valid references of every shape: with and without domain, tag and digest."""
    domain = draw(domains)
    path = draw(paths)
    if domain == "" and "/" not in path and draw(st.booleans()):
        path = f"library/{path}"
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    name = f"{domain}/{path}" if domain else path
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


any_images = image_references() | st.text(max_size=40)

container_names = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}\Z")


@st.composite
def pods(draw: st.DrawFn, *, max_containers: int = 6) -> dict[str, Any]:
    """Pods with unique container names across all lists, and optional existing secrets and annotations."""
    names = draw(st.lists(container_names, min_size=1, max_size=max_containers, unique=True))
    fields: dict[str, list[dict[str, Any]]] = {"containers": [], "initContainers": [], "ephemeralContainers": []}
    for index, name in enumerate(names):
        field = "containers" if index == 0 else draw(st.sampled_from(sorted(fields)))
        fields[field].append({"name": name, "image": draw(any_images), "resources": {}})
    spec: dict[str, Any] = {key: value for key, value in fields.items() if value}
    secrets = draw(st.sampled_from([None, [], [{"name": "other"}], [{"name": "ecr-pullthrough"}]]))
    if secrets is not None:
        spec["imagePullSecrets"] = secrets
    metadata: dict[str, Any] = {"name": "p", "namespace": "default"}
    annotations = draw(
        st.sampled_from([None, {}, {"a/b": "c"}, {"ecr-pullthrough/original-images": '{"old":"nginx"}'}])
    )
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
