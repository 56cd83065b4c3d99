"""Load test: ``sceneloc serve`` on 127.0.0.1 under concurrent valid and malformed requests.

Starts the server as a subprocess with a small model, sends valid requests (synthetic dense
scenes, a few queries each) from concurrent clients, then malformed ones (truncated, not an
image, huge dimensions, blank query, oversized body, missing or malformed fields). Run from
the repository root:

    python benchmarks/load_test.py [--model native-synth] [--requests 200] [--clients 16]

Prints Markdown tables: latency and throughput of the valid requests, the status each kind
of malformed request got. Exits 1 if any request got a 5xx (or another unexpected status),
or if ``/healthz`` stops answering.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "server"))

from serving import healthy, running_server

from sceneloc.data.synth import make_scene
from test_images import huge_png_header, png_bytes

UPLOAD_MB = 2  # the server's --max-upload-mb: oversized bodies stay cheap to send
QUERIES_PER_REQUEST = 3
SCENES = 20


@dataclass(frozen=True)
class Request:
    """One multipart request: ``image`` is None for a request without the field."""

    kind: str
    image: bytes | None
    queries: list[str]
    fields: dict[str, str]
    expected: int


def valid_requests(count: int) -> list[Request]:
    """``count`` requests over a few synthetic dense scenes, each asked its own queries."""
    scenes = [make_scene(np.random.default_rng(seed), split="test") for seed in range(SCENES)]
    encoded = [(png_bytes(s.image), [q.text for q in s.queries]) for s in scenes]
    return [
        Request("valid", image, queries[:QUERIES_PER_REQUEST], {}, 200)
        for image, queries in itertools.islice(itertools.cycle(encoded), count)
    ]


def malformed_requests(count: int, png: bytes) -> list[Request]:
    """``count`` bad requests, cycling through each way a request can be wrong."""
    kinds = [
        Request("truncated PNG", png[: len(png) // 2], ["a circle"], {}, 400),
        Request("not an image", b"GIF? no, just text", ["a circle"], {}, 400),
        Request("100000x100000 PNG header", huge_png_header(), ["a circle"], {}, 413),
        Request("empty query", png, [""], {}, 400),
        Request("blank query", png, ["  \t "], {}, 400),
        Request("oversized body", os.urandom(UPLOAD_MB * 2**20 + 1), ["a circle"], {}, 413),
        Request("missing image", None, ["a circle"], {}, 422),
        Request("missing queries", png, [], {}, 422),
        Request("threshold not a number", png, ["a circle"], {"threshold": "high"}, 422),
        Request("top_k 0", png, ["a circle"], {"top_k": "0"}, 422),
    ]
    return list(itertools.islice(itertools.cycle(kinds), count))


def send(client: httpx.Client, url: str, request: Request) -> tuple[int, float]:
    """The status (0 when the connection failed) and the seconds until the answer."""
    files = {"image": ("scene.png", request.image, "image/png")} if request.image else None
    data = {"queries": request.queries, **request.fields}
    start = time.perf_counter()
    try:
        status = client.post(f"{url}/v1/locate", files=files, data=data).status_code
    except httpx.TransportError:
        status = 0
    return status, time.perf_counter() - start


def run(url: str, requests: list[Request], clients: int) -> tuple[list[tuple[int, float]], float]:
    """Send ``requests`` from ``clients`` threads over as many connections; the wall time too."""
    limits = httpx.Limits(max_connections=clients)
    with httpx.Client(timeout=120, limits=limits) as client, ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        outcomes = list(pool.map(lambda request: send(client, url, request), requests))
        return outcomes, time.perf_counter() - start


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latency_table(outcomes: list[tuple[int, float]], elapsed: float) -> str:
    statuses = Counter(status for status, _ in outcomes)
    latencies = [seconds * 1000 for status, seconds in outcomes if status == 200]
    row = [
        str(len(outcomes)),
        ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())),
        f"{percentile(latencies, 50):.0f} ms",
        f"{percentile(latencies, 95):.0f} ms",
        f"{len(latencies) / elapsed:.1f} req/s",
    ]
    return markdown(["requests", "statuses", "p50 latency", "p95 latency", "throughput"], [row])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="native-synth")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--malformed", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="the server's inference threads")
    parser.add_argument("--queue-limit", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    valid = valid_requests(args.requests)
    malformed = malformed_requests(args.malformed, valid[0].image or b"")
    serve_args = [
        *("--model", args.model, "--device", args.device, "--workers", str(args.workers)),
        *("--queue-limit", str(args.queue_limit), "--max-upload-mb", str(UPLOAD_MB)),
    ]
    with tempfile.TemporaryDirectory() as tmp, running_server(serve_args, Path(tmp) / "log") as url:
        run(url, valid[:2], 1)  # warm-up: first-call allocations
        outcomes, elapsed = run(url, valid, args.clients)
        bad_outcomes, _ = run(url, malformed, args.clients)
        still_up = healthy(url)
        log = (Path(tmp) / "log").read_text()

    print(
        f"\n{len(valid)} valid requests ({QUERIES_PER_REQUEST} queries on a 512x512 scene each) "
        f"from {args.clients} clients; {args.model} on {args.device}, {args.workers} inference "
        f"worker(s), {os.cpu_count()} CPUs\n"
    )
    print(latency_table(outcomes, elapsed))
    by_kind: dict[str, Counter[int]] = {}
    for request, (status, _) in zip(malformed, bad_outcomes):
        by_kind.setdefault(request.kind, Counter())[status] += 1
    expected = {r.kind: r.expected for r in malformed}
    rows = [
        [kind, str(expected[kind]), ", ".join(f"{s} x{n}" for s, n in sorted(got.items()))]
        for kind, got in by_kind.items()
    ]
    print(f"\n{len(malformed)} malformed requests from {args.clients} clients\n")
    print(markdown(["request", "expected", "got"], rows))
    server_errors = sum(status >= 500 for status, _ in outcomes + bad_outcomes)
    print(f"\n5xx answers: {server_errors}; /healthz afterwards: {'ok' if still_up else 'DOWN'}")

    checks = [(status == 200, f"a valid request got {status}") for status, _ in outcomes]
    checks += [
        (status == request.expected, f"{request.kind}: expected {request.expected}, got {status}")
        for request, (status, _) in zip(malformed, bad_outcomes)
    ]
    checks += [(still_up, "/healthz did not answer"), ("Traceback" not in log, "a traceback")]
    problems = sorted({what for ok, what in checks if not ok})
    for problem in problems:
        print(f"FAILED: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
