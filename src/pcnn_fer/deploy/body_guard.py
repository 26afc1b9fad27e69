"""ASGI middleware guarding request bodies of ``pcnn serve``: 413 past the size limit, 408 when the client stops
sending in the middle of its body.

Both answers are sent in place of whatever the application would have said (it sees a disconnect), with
``Connection: close`` so that the connection does not linger.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..defaults import DEFAULT_READ_TIMEOUT

#: Oversized bodies up to this many times the limit are read and discarded before the 413 is sent, so that clients
#: that write the whole body before reading (curl, httpx, most libraries) see the 413 instead of a reset.
DRAIN_FACTOR = 4


class BodyGuardMiddleware:
    """Pure ASGI middleware for POST/PUT/PATCH requests: 413 when the body is larger than ``limit`` bytes (judged on
    the declared ``Content-Length`` and on the bytes actually received), 408 when no body bytes arrive for
    ``read_timeout`` seconds before the body is complete."""

    def __init__(self, app: Any, limit: int, message: str, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 timeout_message: str = "") -> None:
        self.app, self.limit, self.message = app, int(limit), message
        self.read_timeout = float(read_timeout)
        self.timeout_message = timeout_message or f"upload stalled: no data for {self.read_timeout:g} s"

    @staticmethod
    async def _reply(send: Any, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _drain(self, receive: Any, already: int) -> None:
        """Read and discard the rest of the body, up to DRAIN_FACTOR × the limit (each read within the timeout)."""
        seen = already
        while seen <= DRAIN_FACTOR * self.limit:
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                return
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 413 / 408 when its body is too large / stalls."""
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= DRAIN_FACTOR * self.limit:
                await self._drain(receive, 0)
            await self._reply(send, 413, self.message)
            return
        state: dict[str, Any] = {"received": 0, "failed": None, "replied": False, "started": False,
                                 "complete": False}

        async def guarded_receive() -> dict:
            """The app's receive: times out stalled bodies, counts body bytes, drains past the limit."""
            if state["failed"]:
                return {"type": "http.disconnect"}
            if state["complete"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                state["failed"] = (408, self.timeout_message)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["received"] > self.limit:
                    state["failed"] = (413, self.message)
                    if not state["complete"]:
                        await self._drain(receive, state["received"])
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            """The app's send, replaced by the 413 / 408 once the body failed."""
            if state["failed"]:
                if not state["replied"] and not state["started"]:
                    state["replied"] = True
                    await self._reply(send, *state["failed"])
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not state["failed"]:
                raise
        if state["failed"] and not state["replied"] and not state["started"]:
            state["replied"] = True
            await self._reply(send, *state["failed"])


__all__ = ["BodyGuardMiddleware", "DRAIN_FACTOR", "DEFAULT_READ_TIMEOUT"]
