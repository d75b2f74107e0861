"""The load generator of `make bench`: keep-alive TLS clients in one asyncio loop, raw HTTP/1.1.

Every response is checked: status 200 and the same bytes as the first answer to the same
request (the webhook's answer is a pure function of the request; the bench checks that first
answer's patch itself). Prints one JSON object: requests, errors, seconds, latency percentiles
and the generator's own CPU seconds, so a saturated generator shows.
Usage: python -m tests.bench.load PORT CA_FILE BODY_FILE CONCURRENCY SECONDS
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
import sys
import time
from pathlib import Path

from tests.drills import connect, exchange, post


async def run(
    port: int, context: ssl.SSLContext, request: bytes, concurrency: int, seconds: float
) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    expected: bytes | None = None
    reader, writer = await connect(port, context)
    expected = (await exchange(reader, writer, request)).body
    writer.close()
    stop = 0.0

    async def client() -> None:
        nonlocal errors
        reader, writer = await connect(port, context)
        await exchange(reader, writer, request)  # handshake and warm-up, untimed
        ready.append(1)
        if len(ready) == concurrency:
            all_ready.set()
        await start.wait()
        while time.monotonic() < stop:
            answer = await exchange(reader, writer, request)
            latencies.append(answer.seconds)
            if answer.status != 200 or answer.body != expected:
                errors += 1
        writer.close()

    start, all_ready, ready = asyncio.Event(), asyncio.Event(), []
    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    await all_ready.wait()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.monotonic()
    stop = began + seconds
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "requests": len(ordered),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(len(ordered) / elapsed),
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 3),
        "loadgen_cpu_seconds": round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 2),
    }


def main() -> None:
    port, ca, body, concurrency, seconds = sys.argv[1:6]
    context = ssl.create_default_context(cafile=ca)
    request = post("/mutate", Path(body).read_bytes())
    import uvloop

    result = uvloop.run(run(int(port), context, request, int(concurrency), float(seconds)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
