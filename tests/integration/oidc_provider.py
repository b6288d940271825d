"""A real OpenID provider on 127.0.0.1 for the sign-in tests: ``oidc-provider-mock`` (PyPI).

It is a complete Authlib-based provider (discovery, authorize, token, JWKS,
end-session), run in a thread. The tests drive the real authorization-code
flow through it; the client is registered dynamically, so its secret is
checked at the token endpoint, and nonces are required.

For the callback's refusals, :class:`Provider` can *tamper* with the id_token
the token endpoint returns (change claims, sign with another key, another
``kid``) and publish extra keys at the JWKS endpoint (a key rotation). Every
other byte comes from the provider itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import flask
import httpx
from joserfc import jws
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

# (claims, header) -> (claims, header, signing key); claims and header are copies.
Tamper = Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any], RSAKey]]

ALICE_OID = "3f2c9a4e-7b1d-4c8e-9a55-0e6b2d1f8c01"
ALICE_CLAIMS = {"oid": ALICE_OID, "name": "Alice Example", "preferred_username": "alice@contoso.test", "roles": ["RegionGuard.Operator"]}


def entra_like_users() -> list[Any]:
    """Users with the claims Entra ID emits: oid, name, preferred_username, roles / groups."""
    from oidc_provider_mock import User

    return [
        User(sub="alice", claims=dict(ALICE_CLAIMS)),
        User(
            sub="ada",
            claims={"oid": "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6", "name": "Ada Admin", "roles": ["RegionGuard.Admin", "Other.Role"]},
        ),
        User(sub="norole", claims={"oid": "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d", "name": "Nora Norole"}),
        User(sub="stranger", claims={"oid": "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b", "name": "Sam Stranger", "roles": ["SomeOther.App"]}),
        User(
            sub="grouped",
            claims={"oid": "6f7a8b9c-0d1e-4f2a-9b3c-4d5e6f7a8b9c", "name": "Gus Group", "groups": ["b7d2c0de-0000-4000-8000-00000000beef"]},
        ),
    ]


def _b64json(segment: str) -> dict[str, Any]:
    import base64

    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


class Provider:
    """The provider app plus two test levers: ``tamper`` and ``extra_keys``."""

    def __init__(self, users: Iterable[Any] | None = None, mount: str = "") -> None:
        import oidc_provider_mock

        self.app = oidc_provider_mock.app(
            require_client_registration=True, require_nonce=True, user_claims=list(users or entra_like_users())
        )
        with self.app.test_request_context():
            self.app.preprocess_request()
            storage = flask.g.oidc_provider_mock_storage
        self.key = RSAKey.import_key(storage.jwk.as_dict(is_private=True))
        self.kid = str(storage.jwk.as_dict()["kid"])
        self.mount = mount.rstrip("/")
        self.tamper: Tamper | None = None
        self.extra_keys: list[RSAKey] = []
        self.jwks_fetches = 0
        self.token_requests: list[dict[str, str]] = []
        # private_key_jwt (RFC 7523), which the provider lacks: client id -> (certificate PEM, registered secret)
        self.certificates: dict[str, tuple[bytes, str]] = {}
        self.assertions: list[dict[str, Any]] = []  # headers and claims of each assertion that verified
        self._lock = threading.Lock()
        self._inner = self.app.wsgi_app
        self.base = ""

    # -- WSGI: the provider, mounted under ``mount`` (Entra's /{tenant}/v2.0 layout), with the two levers
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if self.mount:
            if not path.startswith(self.mount + "/"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not here"]
            environ = dict(environ, SCRIPT_NAME=self.mount, PATH_INFO=path[len(self.mount) :])
            path = environ["PATH_INFO"]
        if path == "/jwks":
            with self._lock:
                self.jwks_fetches += 1
            if self.extra_keys:
                keys = [self.key.as_dict(private=False), *(k.as_dict(private=False) for k in self.extra_keys)]
                body = json.dumps({"keys": keys}).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
        if path == "/oauth2/token":
            return self._token(environ, start_response)
        return self._inner(environ, start_response)

    def _token(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        from urllib.parse import parse_qsl

        form = dict(parse_qsl(raw.decode()))
        with self._lock:
            self.token_requests.append(form)
        import io

        if form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            checked = self._client_assertion(form, environ)
            if checked is None:
                body = b'{"error": "invalid_client", "error_description": "client assertion refused"}'
                start_response("401 Unauthorized", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            raw, environ = checked
        environ = dict(environ, **{"wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw))})
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        body = b"".join(self._inner(environ, capture))
        tamper = self.tamper
        if tamper is not None and captured["status"].startswith("200"):
            token = json.loads(body)
            header_seg, claims_seg, _ = token["id_token"].split(".")
            claims, header, key = tamper(_b64json(claims_seg), _b64json(header_seg))
            token["id_token"] = jws.serialize_compact(header, json.dumps(claims).encode(), key)
            body = json.dumps(token).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"] + [("Content-Length", str(len(body)))]
        start_response(captured["status"], headers)
        return [body]

    def _client_assertion(self, form: dict[str, str], environ: dict[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
        """Verify a private_key_jwt assertion as Entra ID does (signature by the registered certificate's key,
        x5t#S256, iss = sub = client id, aud = the token endpoint, not expired); then hand the provider the
        registered client's secret, the one client authentication it knows."""
        import base64
        import hashlib
        import time
        from urllib.parse import urlencode

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jws import JWSRegistry

        assertion = form.get("client_assertion", "")
        try:
            client_id = str(_b64json(assertion.split(".")[1])["iss"])
            pem, secret = self.certificates[client_id]
            cert = x509.load_pem_x509_certificate(pem)
            key = RSAKey.import_key(
                cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
            token = jwt.decode(assertion, key, registry=JWSRegistry(algorithms=["PS256", "RS256"]))
        except (KeyError, IndexError, ValueError, JoseError):
            return None
        der = cert.public_bytes(serialization.Encoding.DER)
        thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
        c = token.claims
        endpoint = f"{self.base}{self.mount}/oauth2/token"
        if (
            token.header.get("x5t#S256") != thumbprint
            or c.get("sub") != client_id
            or c.get("aud") != endpoint
            or c.get("exp", 0) < time.time()
        ):
            return None
        with self._lock:
            self.assertions.append({"header": dict(token.header), "claims": dict(c)})
        rest = {k: v for k, v in form.items() if k not in ("client_assertion", "client_assertion_type", "client_id")}
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return urlencode(rest).encode(), dict(environ, HTTP_AUTHORIZATION=f"Basic {basic}")

    # -- helpers for tests
    def reset(self) -> None:
        """Back to an honest provider with fresh counters (the provider is shared by a module's tests)."""
        with self._lock:
            self.tamper = None
            self.extra_keys = []
            self.jwks_fetches = 0
            self.token_requests = []
            self.assertions = []

    @property
    def issuer(self) -> str:
        return self.base  # the provider names itself by the host it is asked on (no path)

    def register_client(self, redirect_uris: list[str]) -> tuple[str, str]:
        r = httpx.post(f"{self.base}{self.mount}/oauth2/clients", json={"redirect_uris": redirect_uris}, timeout=10)
        r.raise_for_status()
        data = r.json()
        return str(data["client_id"]), str(data["client_secret"])

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        r = httpx.put(f"{self.base}{self.mount}/users/{sub}", json=claims, timeout=10)
        r.raise_for_status()


@contextmanager
def running(provider: Provider) -> Iterator[Provider]:
    server = make_server("127.0.0.1", 0, provider, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="oidc-provider", daemon=True)
    thread.start()
    provider.base = f"http://127.0.0.1:{server.server_port}"
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def certificate_pem(path: Any, password: bytes | None = None) -> bytes:
    """Write a PEM with a fresh RSA key and its self-signed certificate to ``path``; return the certificate's PEM."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regionguard")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc) + cert_pem)
    return cert_pem
