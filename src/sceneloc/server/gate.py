"""Admission control and the upload limit, applied before a request body is read.

Both run as ASGI middleware rather than in the endpoint because FastAPI parses a multipart
body completely before the endpoint runs: refusing there would mean accepting a whole upload
from every client of an already saturated server.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sceneloc.server.schemas import error_response

#: Weight of the newest inference time in the running mean behind ``Retry-After``.
SMOOTHING = 0.2


class Admission:
    """Counts the requests admitted to inference (running and waiting) against a limit.

    Only the event loop touches the counter, so check-and-increment needs no lock.
    """

    def __init__(self, limit: int, workers: int) -> None:
        self.limit = limit
        self.workers = workers
        self.admitted = 0
        self.mean_seconds = 1.0

    def try_enter(self) -> bool:
        if self.admitted >= self.limit:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    def observe(self, seconds: float) -> None:
        """Fold one inference time into the running mean."""
        self.mean_seconds += SMOOTHING * (seconds - self.mean_seconds)

    def retry_after(self) -> int:
        """Whole seconds until a slot is likely to free: one inference spread over the workers."""
        return max(1, math.ceil(self.mean_seconds / self.workers))


class RequestGate:
    """Refuse oversized bodies (413) and, on a ``POST`` to one of ``gated_paths`` (the paths
    that run the model), requests over the queue (503).

    A declared ``Content-Length`` over the limit is refused at once; a body that streams past
    it (chunked, or lying about its length) fails while it is read, with an HTTP 413 that
    FastAPI passes on to the app's error handler.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_upload_bytes: int,
        admission: Admission,
        gated_paths: Collection[str],
    ) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.admission = admission
        self.gated_paths = frozenset(gated_paths)
        self.too_large = f"the upload is over the server's limit of {max_upload_bytes:,} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_upload_bytes:
            await error_response(413, self.too_large)(scope, receive, send)
            return
        gated = scope["method"] == "POST" and scope["path"] in self.gated_paths
        if gated and not self.admission.try_enter():
            retry = self.admission.retry_after()
            message = f"server busy: {self.admission.limit} requests already admitted"
            response = error_response(503, message, {"Retry-After": str(retry)})
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_upload_bytes:
                    raise HTTPException(413, self.too_large)
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            if gated:
                self.admission.leave()
