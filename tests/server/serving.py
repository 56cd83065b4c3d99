"""What the server tests share: ``sceneloc serve`` as a real subprocess on a free port (for
the API tests and the load test), a locate request and the check of an error answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(args: Sequence[str], log: Path, timeout: float = 120.0) -> Iterator[str]:
    """Start ``sceneloc serve ARGS`` on 127.0.0.1, yield its URL once ``/healthz`` answers.

    The server's output goes to ``log`` (a pipe nobody reads would block it); it is
    terminated on exit.
    """
    port = free_port()
    command = [sys.executable, "-m", "sceneloc", "serve", *args,
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not come up:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    except (httpx.TransportError, ValueError):
        return False


def post(client: TestClient, image: bytes | None, queries=("a circle",), **fields):
    files = {"image": ("scene.png", image, "image/png")} if image is not None else None
    return client.post("/v1/locate", files=files, data={"queries": list(queries)} | fields)


def assert_error(response: httpx.Response, status: int, text: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    assert text in body["error"]
