"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for integration tests.

LATM reaches its models with ``ChatOpenAI`` over HTTP, so a server process
(``langgraph dev``, ``latm serve``) can be driven by scripted models that live
in the test process: point ``LATM_MAKER_BASE_URL`` at ``<url>/maker/v1`` and
``LATM_USER_BASE_URL`` at ``<url>/user/v1``. Each role replays its scripted
replies in order and reports token usage (in a stream only when the request
asks for it with ``stream_options.include_usage``, as OpenAI and vLLM do); a
request beyond the script gets HTTP 500 saying so. A scripted reply may be a
function of the request body, for requests that arrive in no fixed order.
Every request body is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Reply: TypeAlias = str | Callable[[dict[str, Any]], str]
"""A scripted reply: its text, or a function of the request body that returns it."""

USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


class FakeOpenAI:
    """Scripted replies per role, served by uvicorn in a background thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str, deque[Reply]] = {}
        self._requests: dict[str, list[dict[str, Any]]] = {}
        self.app = Starlette(
            routes=[Route("/{role}/v1/chat/completions", self._complete, methods=["POST"])]
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def script(self, role: str, replies: list[Reply]) -> None:
        """Queue replies for ``role`` (``maker`` or ``user``)."""
        with self._lock:
            self._replies.setdefault(role, deque()).extend(replies)

    def reset(self) -> None:
        """Forget every scripted reply and recorded request."""
        with self._lock:
            self._replies.clear()
            self._requests.clear()

    def requests(self, role: str) -> list[dict[str, Any]]:
        """The request bodies ``role`` received, in order."""
        with self._lock:
            return list(self._requests.get(role, []))

    def left(self, role: str) -> int:
        """How many scripted replies ``role`` has not given yet."""
        with self._lock:
            return len(self._replies.get(role, ()))

    def base_url(self, role: str) -> str:
        """The OpenAI base URL of ``role``."""
        return f"{self.url}/{role}/v1"

    async def _complete(self, request: Request) -> Response:
        role = request.path_params["role"]
        body = await request.json()
        with self._lock:
            self._requests.setdefault(role, []).append(body)
            queue = self._replies.get(role)
            reply = queue.popleft() if queue else None
        if reply is None:
            return JSONResponse(
                {"error": {"message": f"no scripted reply left for the {role} model"}},
                status_code=500,
            )
        text = reply(body) if callable(reply) else reply
        model = body.get("model", "fake")
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self._chunks(model, text, usage=usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": USAGE,
            }
        )

    async def _chunks(self, model: str, text: str, *, usage: bool) -> AsyncIterator[str]:
        """Stream ``text``; usage comes last, only when asked for (as OpenAI and vLLM do)."""
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
        base["created"] = int(time.time())
        deltas = [
            {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        ]
        for choice in deltas:
            yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
        if usage:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': USAGE})}\n\n"
        yield "data: [DONE]\n\n"

    def start(self) -> FakeOpenAI:
        """Serve on a free port of 127.0.0.1; returns once it accepts connections."""
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
