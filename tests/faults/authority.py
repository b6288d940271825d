"""A Microsoft Entra ID authority on 127.0.0.1 (HTTPS, a throwaway CA) whose token endpoint hangs.

Real azure-identity credentials talk to it through their ``authority``
argument (with ``disable_instance_discovery=True``, so nothing leaves
127.0.0.1): it serves the tenant's OpenID configuration, and holds every
token request until :meth:`HangingAuthority.release` or ``hang_s`` passes,
then answers 400 ``invalid_client`` (a token the fake ARM would not take
anyway).
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

TENANT = "00000000-0000-0000-0000-0000000a0a0a"


class HangingAuthority:
    def __init__(self, hang_s: float = 10.0) -> None:
        self.hang_s = hang_s
        self.token_requests = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        ca = trustme.CA(organization_name="regionguard test authority")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self._dir = tempfile.mkdtemp(prefix="authority-")
        self.ca_bundle = os.path.join(self._dir, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_bundle)
        authority = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                base = f"{authority.url}/{TENANT}"
                self._json(
                    200,
                    {
                        "issuer": f"{base}/v2.0",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    },
                )

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with authority._lock:
                    authority.token_requests += 1
                authority._released.wait(authority.hang_s)
                self._json(400, {"error": "invalid_client", "error_description": "test authority: no tokens here"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="authority", daemon=True)
        self._thread.start()

    def credential(self) -> Any:
        """A real azure-identity ClientSecretCredential that asks this authority for its tokens."""
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(
            TENANT,
            "11111111-0000-0000-0000-000000000001",
            "not-a-secret",
            authority=self.url,
            disable_instance_discovery=True,
            connection_verify=self.ca_bundle,
        )

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class HangingIdentityEndpoint:
    """A managed identity endpoint on 127.0.0.1 (the App Service kind: plain HTTP) that holds every token request.

    A worker's DefaultAzureCredential asks it for tokens when the worker runs
    with :meth:`environ` (``AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential``
    keeps the credential to the managed identity, so nothing else is tried and
    nothing leaves 127.0.0.1). Requests are held until :meth:`close`, then
    answered 500.
    """

    def __init__(self) -> None:
        self.token_requests = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint._lock:
                    endpoint.token_requests += 1
                endpoint._closed.wait(60)
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"
        self._thread = threading.Thread(target=self.server.serve_forever, name="identity-endpoint", daemon=True)
        self._thread.start()

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` without any Azure identity settings of its own, pointed at this endpoint."""
        env = {k: v for k, v in base.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))}
        env.update(AZURE_TOKEN_CREDENTIALS="ManagedIdentityCredential", IDENTITY_ENDPOINT=self.url, IDENTITY_HEADER="test-header")
        return env

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
