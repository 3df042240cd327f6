"""A small OpenAI-compatible chat-completions server for the tests, on 127.0.0.1.

Standard library only (``http.server`` threads). It answers ``POST
.../chat/completions`` as OpenAI does, streaming (server-sent events, the last
chunk carrying the usage when ``stream_options.include_usage`` asks) or not,
with usage in every answer. Which note a request is for is the first
``NOTE-<word>`` in its messages; the answer is :func:`answer_text` of it.

Faults are scripted per note (:class:`Script`): a status per attempt (429,
503...), with ``Retry-After`` or ``retry-after-ms`` headers, a latency, or a
hang until the server stops. Models named in ``no_stream`` refuse a request
for a stream with a 400, as servers that cannot stream do. The server records
every request (:class:`Request`: note, attempt, arrival, the status sent and
when) and the maximum number of requests in flight.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NOTE = re.compile(r"NOTE-[\w-]+")


def answer_text(note: str) -> str:
    """The text the server answers a note with."""
    return f"The server's answer to {note}: it depends on the base case."


@dataclass
class Script:
    """What the server does with one note's requests.

    Attributes:
        statuses: The status of each attempt in turn (200 once they run out).
        headers: Headers sent with the error statuses (``Retry-After``...).
        latency: Seconds before answering (``None``: the server's latency).
        hang: Never answer (until the server stops).
        hangs: Never answer the first ``hangs`` attempts (until the server stops).
    """

    statuses: tuple[int, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    latency: float | None = None
    hang: bool = False
    hangs: int = 0


@dataclass
class Request:
    """One request the server got.

    Attributes:
        note: The note it was for (``""`` when no note was named).
        attempt: Its number among that note's requests (1 for the first).
        model: The model asked for.
        stream: Whether it asked for a stream.
        arrived: When it arrived (``time.monotonic()``).
        status: The status sent (0 while unanswered).
        answered: When the status was sent (``time.monotonic()``).
        authorization: The ``Authorization`` header.
        usage: The usage the answer reported (``None`` unless it succeeded).
    """

    note: str
    attempt: int
    model: str
    stream: bool
    arrived: float
    status: int = 0
    answered: float = 0.0
    authorization: str = ""
    usage: dict[str, int] | None = None


class LlmServer:
    """The server: start with :meth:`start` (or :func:`running`), stop with :meth:`stop`.

    Args:
        latency: Seconds every answer takes unless a script says otherwise.
        no_stream: Models that refuse streaming requests with a 400.
        api_key: When set, requests without ``Bearer <api_key>`` get a 401.
    """

    def __init__(
        self,
        latency: float = 0.0,
        no_stream: tuple[str, ...] = (),
        api_key: str | None = None,
    ) -> None:
        self.latency = latency
        #: ``(prompt_tokens, completion_tokens)`` every answer reports, when set
        #: (else the words of the prompt and of the answer).
        self.usage: tuple[int, int] | None = None
        self.no_stream = set(no_stream)
        self.api_key = api_key
        self.scripts: dict[str, Script] = {}
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.open_connections = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._closed = threading.Condition()
        self._sockets: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL of the API (``http://127.0.0.1:<port>/v1``)."""
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> LlmServer:
        """Listen on a free port of 127.0.0.1 and serve in a thread."""
        server = self

        class Handler(_Handler):
            owner = server

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = True  # server_close() joins every handler thread
            request_queue_size = 128

            def process_request(self, request: Any, client_address: Any) -> None:
                with server._closed:
                    server.connections += 1
                    server.open_connections += 1
                    server._sockets.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                with server._closed:
                    server._sockets.discard(request)
                super().shutdown_request(request)
                with server._closed:
                    server.open_connections -= 1
                    server._closed.notify_all()

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging requests, stop serving and join the thread."""
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            # Handler threads wait on idle keep-alive connections: end them, so
            # that server_close() can join every thread.
            with self._closed:
                sockets = list(self._sockets)
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            assert not self._thread.is_alive(), "the test server's thread did not stop"

    # -- what the tests read ---------------------------------------------------------

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until every client connection is closed; ``False`` on a timeout."""
        with self._closed:
            return self._closed.wait_for(lambda: self.open_connections == 0, timeout)

    def requests_for(self, note: str) -> list[Request]:
        """The requests for one note, in the order they arrived."""
        with self._lock:
            return [request for request in self.requests if request.note == note]

    def per_note(self) -> dict[str, int]:
        """Note -> how many requests it got."""
        counts: dict[str, int] = {}
        with self._lock:
            for request in self.requests:
                counts[request.note] = counts.get(request.note, 0) + 1
        return counts

    # -- what the handler calls ------------------------------------------------------

    def _arrive(self, note: str, model: str, stream: bool, authorization: str) -> Request:
        with self._lock:
            attempt = self._attempts.get(note, 0) + 1
            self._attempts[note] = attempt
            request = Request(note, attempt, model, stream, time.monotonic())
            request.authorization = authorization
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return request

    def _leave(self, request: Request, status: int) -> None:
        with self._lock:
            request.status = status
            request.answered = time.monotonic()
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    owner: LlmServer
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections
    # The headers and the body go out in two writes: with Nagle's algorithm the
    # body waits for the client's delayed ACK (40 ms on Linux), which no real
    # provider adds and which made every answer look 40 ms slower.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_POST(self) -> None:
        server = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        messages = body.get("messages") or []
        text = "\n".join(str(m.get("content") or "") for m in messages)
        found = NOTE.search(text)
        note = found.group(0) if found else ""
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        request = server._arrive(note, model, stream, self.headers.get("Authorization", ""))
        script = server.scripts.get(note, Script())
        status = 200
        try:
            if script.hang or request.attempt <= script.hangs:
                self._hang()
                status = 599
                self.close_connection = True
                return
            latency = server.latency if script.latency is None else script.latency
            if latency:
                server.stopping.wait(latency)  # the answer's latency, cut short by a stop
            if not self.path.endswith("/chat/completions"):
                status = 404
            elif server.api_key is not None and (
                self.headers.get("Authorization") != f"Bearer {server.api_key}"
            ):
                status = 401
            elif request.attempt <= len(script.statuses):
                status = script.statuses[request.attempt - 1]
            elif stream and model in server.no_stream:
                status = 400
            if status != 200:
                self._error(status, script.headers if status in (429, 503) else {})
                return
            answer = answer_text(note or "nothing")
            sent, answered = server.usage or (len(text.split()), len(answer.split()))
            usage = {
                "prompt_tokens": sent,
                "completion_tokens": answered,
                "total_tokens": sent + answered,
            }
            request.usage = {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
            }
            if stream:
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(model, answer, usage if include else None)
            else:
                self._complete(model, answer, usage)
        finally:
            server._leave(request, status)

    def _hang(self) -> None:
        """Answer nothing until the client gives up (closes) or the server stops."""
        deadline = time.monotonic() + 60
        while not self.owner.stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            with contextlib.suppress(OSError):
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return  # end of file: the client closed the connection

    def _send(
        self, status: int, content_type: str, payload: bytes, headers: Mapping[str, str]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _error(self, status: int, headers: Mapping[str, str]) -> None:
        kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(
            status, "server_error"
        )
        payload = json.dumps({"error": {"message": f"scripted {status}", "type": kind}})
        self._send(status, "application/json", payload.encode(), headers)

    def _complete(self, model: str, answer: str, usage: dict[str, int]) -> None:
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        self._send(200, "application/json", json.dumps(payload).encode(), {})

    def _stream(self, model: str, answer: str, usage: dict[str, int] | None) -> None:
        half = len(answer) // 2
        base = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
        }
        chunks: list[dict[str, Any]] = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": answer[:half]}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": answer[half:]}}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if usage is not None:
            chunks.append({**base, "choices": [], "usage": usage})
        events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        self._send(200, "text/event-stream", events.encode(), {})


@contextmanager
def running(**options: Any) -> Iterator[LlmServer]:
    """A started :class:`LlmServer`, stopped (its thread joined) on leaving."""
    server = LlmServer(**options).start()
    try:
        yield server
    finally:
        server.stop()


def openai_models_yaml(url: str, *, key_name: str = "localkey") -> str:
    """``extra-openai-models.yaml`` declaring the server's models for ``llm``.

    ``local-chat`` streams; ``local-nostream`` is declared ``can_stream: false``;
    ``local-keyless`` needs a key nobody set (``nokey``).
    """
    return (
        f"- model_id: local-chat\n  model_name: local-chat\n  api_base: {url}\n"
        f"  api_key_name: {key_name}\n"
        f"- model_id: local-nostream\n  model_name: local-nostream\n  api_base: {url}\n"
        f"  api_key_name: {key_name}\n  can_stream: false\n"
        f"- model_id: local-keyless\n  model_name: local-keyless\n  api_base: {url}\n"
        "  api_key_name: nokey\n"
    )


def declare_models(home: Path, server: LlmServer, key: str) -> None:
    """Declare the server's models and their key in ``llm``'s home (``LLM_USER_PATH``)."""
    (home / "extra-openai-models.yaml").write_text(openai_models_yaml(server.url), "utf-8")
    (home / "keys.json").write_text(json.dumps({"localkey": key}), "utf-8")


def notes_canvas(path: Path, count: int, *, columns: int = 1) -> Path:
    """Write a canvas of ``count`` learner's notes, ``NOTE-0`` to ``NOTE-<count - 1>``.

    The notes stand in ``columns`` columns, 400 px apart, rows 300 px apart.
    """
    nodes = [
        {
            "id": f"n{i}",
            "type": "text",
            "text": f"NOTE-{i} is what I understood of topic {i}.",
            "x": (i % columns) * 400,
            "y": (i // columns) * 300,
            "width": 300,
            "height": 120,
            "color": "6",
        }
        for i in range(count)
    ]
    path.write_text(json.dumps({"nodes": nodes, "edges": []}), "utf-8")
    return path
