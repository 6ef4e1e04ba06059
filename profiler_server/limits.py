"""Request body limits, enforced before FastAPI parses (or spools to disk) an oversize body."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

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
    await _send_json(send, 413, {"detail": f"request body larger than {limit} bytes"})


async def _send_json(send: Any, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SingleQueryValueMiddleware:
    """422 with a message when a query parameter is given more than once: no route takes a list in
    its query, and FastAPI would otherwise keep the last value silently (``?kind=a&kind=b``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if b"&" in query:
            names = [name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                detail = [{"loc": ["query", n], "msg": "given more than once; give one value", "type": "value_error"}
                          for n in repeated]  # fmt: skip
                await _send_json(send, 422, {"detail": detail})
                return
        await self.app(scope, receive, send)
