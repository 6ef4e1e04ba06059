"""Request body limits, enforced before FastAPI parses (or spools to disk) an oversize body."""

from __future__ import annotations

import json
from typing import Any

UPLOAD_PATHS = ("/v1/networks", "/v1/predict/onnx")


class BodyLimitMiddleware:
    """413 with a message for bodies over the limit: JSON endpoints get ``json_limit``, network
    uploads ``upload_limit``. Checks Content-Length first and counts streamed bytes otherwise."""

    def __init__(self, app: Any, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit + 64 * 1024 if scope["path"] in UPLOAD_PATHS else self.json_limit
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reject(send, limit)
            return
        state = {"seen": 0, "started": False, "rejected": False}

        async def limited_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    if not state["started"] and not state["rejected"]:
                        state["rejected"] = True
                        await _reject(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            if not state["rejected"]:
                await send(message)

        await self.app(scope, limited_receive, tracking_send)


async def _reject(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
