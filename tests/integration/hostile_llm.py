"""A hostile "Azure OpenAI" on 127.0.0.1: answers each deployment with raw bytes chosen by the test.

Unlike the simulator, nothing here is well-formed on purpose: header values
such as ``retry-after: 1e308``, bodies with NUL bytes and terminal escapes,
streams whose numbers overflow a float. Each deployment name maps to one
canned answer (status, raw header pairs, body bytes); the connection is
closed after every answer.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def stream(cls, chunks: list[Any], headers: list[tuple[bytes, bytes]] | None = None, done: bool = True) -> Answer:
        """An SSE answer; a chunk that is ``bytes`` is sent as is after ``data: ``."""
        lines = []
        for c in chunks:
            payload = c if isinstance(c, bytes) else json.dumps(c).encode()
            lines.append(b"data: " + payload + b"\n\n")
        if done:
            lines.append(b"data: [DONE]\n\n")
        return cls(200, [(b"content-type", b"text/event-stream"), *(headers or [])], b"".join(lines))

    @classmethod
    def error(cls, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
        return cls(status, [(b"content-type", b"application/json"), *(headers or [])], body)


def good_chunks(answer: str, usage: dict[str, Any] | None = None, finish: Any = "stop") -> list[Any]:
    """The chunks of a correct answer (Azure's first chunk has no choices)."""
    return [
        {"choices": [], "prompt_filter_results": []},
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": answer}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        {"choices": [], "usage": usage or {"prompt_tokens": 12, "completion_tokens": 2}},
    ]


class _Handler(socketserver.StreamRequestHandler):
    server: HostileServer

    def handle(self) -> None:
        self.connection.settimeout(5.0)
        request_line = self.rfile.readline(65536).decode("latin-1")
        parts = request_line.split()
        if len(parts) < 2:
            return
        length = 0
        for _ in range(200):  # bounded header count
            line = self.rfile.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((parts[1], body))
        answer = self.server.answer_for(parts[1], body)
        head = [f"HTTP/1.1 {answer.status} X".encode()]
        head += [name + b": " + value for name, value in answer.headers]
        head += [b"content-length: " + str(len(answer.body)).encode(), b"connection: close"]
        self.wfile.write(b"\r\n".join(head) + b"\r\n\r\n" + answer.body)
        self.wfile.flush()


class HostileServer(socketserver.ThreadingTCPServer):
    """``with HostileServer() as s: s.answers["dep"] = Answer(...)``; ``s.base_url``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: dict[str, Answer | Any] = {}
        self.requests: list[tuple[str, bytes]] = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def answer_for(self, path: str, body: bytes) -> Answer:
        # /openai/deployments/<name>/chat/completions?api-version=...
        segments = path.split("?", 1)[0].split("/")
        name = segments[3] if len(segments) > 3 else ""
        answer = self.answers.get(name, Answer.error(404, b'{"error": {"code": "DeploymentNotFound"}}'))
        if callable(answer):  # a function of the expected number in the prompt
            prompt = json.loads(body)["messages"][0]["content"]
            return answer(prompt.rsplit(" ", 1)[-1])
        return answer

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
