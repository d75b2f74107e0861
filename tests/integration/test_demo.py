"""`ecr-pullthrough demo` (what `make demo` runs): the real webhook, one sample pod, each image explained."""

import subprocess
import sys

from webhook.admission.demo import EXAMPLE_REGISTRY


def test_the_demo_shows_each_image_before_and_after_with_its_reason() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "demo"], capture_output=True, text=True, timeout=60, check=True
    )
    out = result.stdout
    assert f"-> {EXAMPLE_REGISTRY}/docker-hub/library/nginx:1.27" in out
    assert f"-> {EXAMPLE_REGISTRY}/quay/prometheus/node-exporter:v1.8.2" in out
    assert "== ghcr.io/example/app:2.0   (other-registry: ghcr.io)" in out
    assert "(digest-pinned: " in out
    assert "(already-ecr)" in out
    assert "imagePullSecrets: [{'name': 'ecr-pullthrough'}]" in out
