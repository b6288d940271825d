"""A webhook receiver on 127.0.0.1 for the notification fault tests and bench/faults.py."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Hook:
    """A webhook receiver on 127.0.0.1 that keeps the event ids of every request it accepted (answered 200).

    While ``holding`` is set it answers nothing: each request waits (its event
    ids in ``held``) until ``release()``, and is then refused with a 503, so a
    sender killed meanwhile has delivered nothing. With ``accept_held`` too, a
    held request counts as accepted at once and is answered 200 on release: the
    receiver took it, only its answer is late (a sender killed meanwhile never
    learns it was delivered).
    """

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.held: list[int] = []
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self.released = threading.Event()
        self.accept_held = False
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ids = [int(e["id"]) for e in json.loads(body).get("events", []) if e.get("id") is not None]
                if hook.holding.is_set():
                    accepted = hook.accept_held
                    with hook.lock:
                        hook.held.extend(ids)
                        if accepted:
                            hook.ids.extend(ids)
                    hook.released.wait(30)
                    self.send_response(200 if accepted else 503)
                else:
                    with hook.lock:
                        hook.ids.extend(ids)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="hook", daemon=True).start()

    def received(self) -> Counter[int]:
        with self.lock:
            return Counter(self.ids)

    def holds(self) -> set[int]:
        with self.lock:
            return set(self.held)

    def release(self) -> None:
        self.holding.clear()
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
