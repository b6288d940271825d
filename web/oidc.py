"""Dashboard sign-in with OpenID Connect (authorization code + PKCE), on Authlib.

See docs/adr/0010-oidc-sign-in-on-authlib.md for the choice of library.

Flow: ``/auth/oidc/login`` stores state, nonce, PKCE verifier and the return
path in the (signed) session and redirects to the provider; the provider
sends the browser back to ``/auth/oidc/callback`` with a code; the callback
takes the state out of the session (single use), exchanges the code (with the
verifier and the client credential) at the token endpoint, and validates the
id_token: signature by the provider's keys (unknown ``kid``: fetch the keys
once more, then refuse), issuer, audience, expiry and nonce. The role comes
from the claim named by ``roles_claim`` through ``role_map``; no mapped value
means no access, on a page that names the claim.

A signed-in session holds only the display name, the stable user id
(``oid`` on Entra ID, ``sub`` elsewhere), the role and a deadline
(``session_lifetime``): role changes at the provider take effect at the next
sign-in, which the deadline forces. The principal's name carries the stable
id, so every audit event and override records who acted, for good.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request, session, url_for
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from werkzeug.wrappers import Response as WerkzeugResponse

from controlplane.config import ConfigError
from controlplane.domain import AuditEvent, EventKind
from controlplane.oidc_settings import EntraIdSignIn, GenericSignIn
from web.security import CSP, SSO_SESSION_KEY, csrf_token, safe_next, state

log = logging.getLogger(__name__)

oidc = Blueprint("oidc", __name__, url_prefix="/auth/oidc")

LEEWAY_SECONDS = 60  # clock skew allowed on exp / iat of the id_token
STATE_SECONDS = 600  # a sign-in must come back within ten minutes
MAX_PENDING = 5  # unfinished sign-ins kept per browser session
MAX_NAME = 120  # the audit actor and override 'who' columns
SignInSettings = EntraIdSignIn | GenericSignIn


class SignInRefused(Exception):
    """The callback refuses this sign-in; ``title`` and ``detail`` are shown to the user (no secrets)."""

    def __init__(self, title: str, detail: str, status: int = 400, claim: str | None = None, audit: bool | None = None) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail
        self.status = status
        self.claim = claim
        # a warning in the audit trail: someone the provider vouched for got no role, or a token failed validation
        self.audit = status == 403 if audit is None else audit


@dataclass(frozen=True, slots=True)
class SsoIdentity:
    """Who signed in, as the provider vouches: stable id, display name, and the role they map to."""

    stable_id: str  # "oid:<guid>" or "sub:<subject>"
    display_name: str
    issuer: str
    role: str
    claim: str
    matched: tuple[str, ...]

    @property
    def principal_name(self) -> str:
        return principal_name(self.display_name, self.stable_id)


def principal_name(display_name: str, stable_id: str) -> str:
    """'Alice Example <oid:7c1e...>' - the display name for people, the stable id for the record.

    A display name cannot pass itself off as a stable id (angle brackets are
    dropped). Bounded to the store's 120 characters: the display name is cut first, and a
    stable id too long to fit is replaced by a digest of it (still stable).
    """
    if len(stable_id) > 64:
        kind, _, value = stable_id.partition(":")
        stable_id = f"{kind}#sha256:{hashlib.sha256(value.encode('utf-8')).hexdigest()[:40]}"
    room = MAX_NAME - len(stable_id) - 3
    # no angle brackets from the provider: only the real stable id may look like one
    display = " ".join(display_name.replace("<", " ").replace(">", " ").split())[:room] or "?"
    return f"{display} <{stable_id}>"


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (Keycloak's ``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def identity_from_claims(cfg: SignInSettings, claims: dict[str, Any]) -> SsoIdentity:
    """Validated id_token claims -> who and which role; refuse with a page that names what is missing."""
    id_claim = cfg.stable_id_claim
    stable = claims.get(id_claim)
    if not isinstance(stable, str) or not stable:
        raise SignInRefused(
            "No stable user id",
            f"The identity token has no '{id_claim}' claim, which regionguard records as the user's stable id in the audit trail.",
            status=403,
            claim=id_claim,
        )
    display = next(
        (str(claims[k]) for k in ("name", "preferred_username", "email") if isinstance(claims.get(k), str) and claims[k]), stable
    )
    name = cfg.roles_claim
    raw = _claim(claims, name)
    if raw is None:
        if name == "groups" and ("_claim_names" in claims or "hasgroups" in claims):
            raise SignInRefused(
                "Too many groups",
                "The 'groups' claim was left out of the token because the user is in too many groups (Entra ID's group overage). "
                "Assign the groups to the application (and emit 'Groups assigned to the application'), or use app roles (roles_claim: roles).",
                status=403,
                claim=name,
            )
        raise SignInRefused(
            f"No '{name}' claim",
            f"You signed in as {display}, but the identity token has no '{name}' claim, so regionguard cannot give you a role. "
            f"Ask an administrator to assign you one of: {_mapped(cfg)}.",
            status=403,
            claim=name,
        )
    values = [raw] if isinstance(raw, str) else [str(v) for v in raw] if isinstance(raw, list) else []
    role = cfg.role_for(values)
    if role is None:
        shown = ", ".join(values[:10]) + (" ..." if len(values) > 10 else "") if values else "(empty)"
        raise SignInRefused(
            f"No role in the '{name}' claim",
            f"You signed in as {display}. The '{name}' claim holds {shown}, and none of these is mapped to a regionguard role. "
            f"Ask an administrator to assign you one of: {_mapped(cfg)}.",
            status=403,
            claim=name,
        )
    matched = tuple(v for v in values if v in {m for ms in cfg.role_map.values() for m in ms})
    return SsoIdentity(
        stable_id=f"{id_claim}:{stable}",
        display_name=display,
        issuer=str(claims.get("iss", "")),
        role=role,
        claim=name,
        matched=matched,
    )


def _mapped(cfg: SignInSettings) -> str:
    return "; ".join(f"{role}: {', '.join(values)}" for role, values in cfg.role_map.items() if values)


# ---------------------------------------------------------------- client credential


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def certificate_credential(path: str, password: str | None) -> tuple[RSAKey, dict[str, str]]:
    """The private key and the JWT header (thumbprints) for a ``private_key_jwt`` client assertion.

    The PEM file holds the private key and the certificate registered with the
    provider. Entra ID finds the certificate by its SHA-256 thumbprint
    (``x5t#S256``, with PS256); ``x5t`` (SHA-1) is sent too for older endpoints.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    where = "web.oidc.client_certificate.path"
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(where, [f"{where}: {path!r} cannot be read: {exc.strerror or exc}"]) from None
    try:
        key = serialization.load_pem_private_key(pem, password=password.encode("utf-8") if password else None)
        cert = x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(where, [f"{where}: {path!r} must hold a PEM private key and its certificate ({exc})"]) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(where, [f"{where}: {path!r} holds a {type(key).__name__}; Entra ID client assertions need an RSA key"])
    der = cert.public_bytes(serialization.Encoding.DER)
    headers = {"x5t#S256": _b64url(hashlib.sha256(der).digest()), "x5t": _b64url(hashlib.sha1(der).digest())}  # thumbprints, not security
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return RSAKey.import_key(pkcs8), headers


# ---------------------------------------------------------------- the provider, per app


class Sso:
    """One OpenID provider for one dashboard app (Authlib's Flask client underneath)."""

    NAME = "sso"

    def __init__(self, app: Flask, cfg: SignInSettings) -> None:
        self.cfg = cfg
        kwargs: dict[str, Any] = {
            "scope": " ".join(cfg.scopes),
            "code_challenge_method": "S256",
            "default_timeout": cfg.timeout,
        }
        secret: Any = None
        auth_methods: list[Any] = []
        if cfg.client_certificate is not None:
            c = cfg.client_certificate
            password = os.environ.get(c.password_env) if c.password_env else None
            if c.password_env and password is None:
                raise ConfigError(
                    "web.oidc", [f"web.oidc.client_certificate.password_env: environment variable {c.password_env} is not set"]
                )
            secret, headers = certificate_credential(c.path, password)
            auth_methods.append(PrivateKeyJWT(alg="PS256", headers=headers))
            kwargs["token_endpoint_auth_method"] = "private_key_jwt"
        elif cfg.client_secret_env:
            secret = os.environ.get(cfg.client_secret_env)
            if not secret:
                raise ConfigError("web.oidc", [f"web.oidc.client_secret_env: environment variable {cfg.client_secret_env} is not set"])
        self.oauth = OAuth(app)
        self.client: Any = self.oauth.register(
            self.NAME,
            client_id=cfg.client_id,
            client_secret=secret,
            server_metadata_url=cfg.discovery_url,
            client_kwargs=kwargs,
            client_auth_methods=auth_methods or None,
        )
        self.client.framework.expires_in = STATE_SECONDS

    # -- discovery
    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once), checked against the configured issuer."""
        try:
            meta: dict[str, Any] = self.client.load_server_metadata()
        except (requests.RequestException, ValueError) as exc:
            log.warning("OIDC discovery at %s failed: %s", self.cfg.discovery_url, exc)
            raise SignInRefused(
                "Identity provider unreachable",
                f"Could not read the discovery document at {self.cfg.discovery_url} ({type(exc).__name__}).",
                502,
            ) from None
        issuer = str(meta.get("issuer", ""))
        if isinstance(self.cfg, GenericSignIn):
            ok = issuer == self.cfg.issuer
        else:
            host = urlsplit(self.cfg.authority)
            ok = urlsplit(issuer).netloc == host.netloc
        if not ok or not meta.get("authorization_endpoint") or not meta.get("token_endpoint") or not meta.get("jwks_uri"):
            self.client.server_metadata.pop("_loaded_at", None)  # try again next time
            raise SignInRefused(
                "Identity provider misconfigured",
                f"The discovery document at {self.cfg.discovery_url} names issuer {issuer!r} or lacks an endpoint; check web.oidc.",
                502,
            )
        return meta

    def form_action_origins(self) -> list[str]:
        """Origins a form on our pages may end up at: the provider's sign-out page (after POST /logout)."""
        base = self.cfg.authority if isinstance(self.cfg, EntraIdSignIn) else self.cfg.issuer
        origins = [_origin(base)]
        end = self.client.server_metadata.get("end_session_endpoint")
        if end and _origin(end) not in origins:
            origins.append(_origin(end))
        return origins

    # -- the flow
    def redirect_uri(self) -> str:
        return self.cfg.redirect_uri or url_for("oidc.callback", _external=True)

    def begin(self, next_path: str) -> WerkzeugResponse:
        self.metadata()
        redirect_uri = self.redirect_uri()
        rv = self.client.create_authorization_url(redirect_uri)
        url = rv.pop("url")
        _forget_oldest_pending(MAX_PENDING - 1)
        self.client.save_authorize_data(redirect_uri=redirect_uri, next=next_path, **rv)
        return redirect(url)

    def complete(self) -> tuple[SsoIdentity, str]:
        """Check the callback; return who signed in and the local path to go back to."""
        state = request.args.get("state") or ""
        framework = self.client.framework
        data = framework.get_state_data(session, state) if state else None
        if state:
            framework.clear_state_data(session, state)  # single use, whatever happens next
        if request.args.get("error"):  # shown even without state (some providers drop it): it signs nobody in
            err = re.sub(r"[^A-Za-z0-9_.-]", "", request.args.get("error", ""))[:60]
            desc = " ".join((request.args.get("error_description") or "").split())[:300]
            raise SignInRefused("The identity provider refused the sign-in", f"{err}: {desc}".rstrip(": "))
        if not data:
            raise SignInRefused(
                "Sign-in not recognised",
                "This sign-in response does not match a sign-in started in this browser (unknown, expired or reused 'state'). Start again.",
            )
        code = request.args.get("code")
        if not code:
            raise SignInRefused("Sign-in incomplete", "The identity provider sent no authorization code.")
        meta = self.metadata()
        try:
            token = self.client.fetch_access_token(redirect_uri=data["redirect_uri"], code=code, code_verifier=data.get("code_verifier"))
        except OAuthError as exc:
            log.warning("OIDC token exchange refused: %s %s", exc.error, exc.description)
            if exc.error in ("invalid_client", "unauthorized_client"):
                why = "it did not accept regionguard's client credential: check the secret or certificate registered for the app"
            else:
                why = "it may have been used already, or have expired. Start again"
            raise SignInRefused(
                "Authorization code refused", f"The identity provider would not exchange the code ({exc.error}): {why}."
            ) from None
        except requests.RequestException as exc:
            raise SignInRefused(
                "Identity provider unreachable", f"The token endpoint did not answer ({type(exc).__name__}).", 502
            ) from None
        if not token.get("id_token"):
            raise SignInRefused("No identity token", "The token endpoint returned no id_token; check that the 'openid' scope is granted.")
        try:
            claims = self.client.parse_id_token(token, nonce=data["nonce"], leeway=LEEWAY_SECONDS)
        except JoseError as exc:
            log.warning("OIDC id_token refused (%s): %s", type(exc).__name__, exc)
            raise SignInRefused("Identity token refused", _why(exc, meta), audit=True) from None
        return identity_from_claims(self.cfg, dict(claims)), str(data.get("next") or "")

    def end_session_url(self) -> str | None:
        """The provider's RP-initiated logout URL, if it has one (Entra ID, Keycloak, Okta do; Google does not)."""
        end = self.client.server_metadata.get("end_session_endpoint")
        if not end:
            try:
                end = self.metadata().get("end_session_endpoint")
            except SignInRefused:
                return None
        if not end:
            return None
        back = self.cfg.post_logout_redirect_uri or url_for("auth.login", signed_out=1, _external=True)
        sep = "&" if urlsplit(end).query else "?"
        return f"{end}{sep}{urlencode({'client_id': self.cfg.client_id, 'post_logout_redirect_uri': back})}"


def _forget_oldest_pending(keep: int) -> None:
    """Keep at most ``keep`` unfinished sign-ins in the session (each tab may start one), so the cookie stays small."""
    prefix = f"_state_{Sso.NAME}_"
    pending = sorted((k for k in session if k.startswith(prefix)), key=lambda k: float(session[k].get("exp", 0)))
    for key in pending[: max(0, len(pending) - keep)]:
        session.pop(key, None)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _why(exc: JoseError, meta: dict[str, Any]) -> str:
    from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, InvalidKeyIdError, MissingClaimError

    if isinstance(exc, InvalidKeyIdError):
        return "It is signed with a key the provider does not publish (unknown 'kid', even after fetching the provider's keys again)."
    if isinstance(exc, BadSignatureError):
        return "Its signature does not verify with the provider's published key."
    if isinstance(exc, ExpiredTokenError):
        return "It has expired."
    if isinstance(exc, MissingClaimError | InvalidClaimError):
        claim = getattr(exc, "claim", None) or str(exc)
        hint = {
            "iss": f"it was not issued by {meta.get('issuer')}",
            "aud": "it was issued for another application (audience)",
            "nonce": "it does not carry this sign-in's nonce (a replayed or injected token)",
            "azp": "it was issued for another application (its audience is not this client)",
            "exp": "it has expired",
        }.get(str(claim), "")
        kind = "missing" if isinstance(exc, MissingClaimError) else "wrong"
        return f"Its '{claim}' claim is {kind}" + (f": {hint}." if hint else ".")
    return f"It could not be validated ({type(exc).__name__})."


# ---------------------------------------------------------------- session, views, hooks


def sso() -> Sso | None:
    return current_app.extensions.get("regionguard_sso")


def install(app: Flask, cfg: SignInSettings | None) -> None:
    """Set up the provider (when configured) and register the blueprint."""
    if cfg is not None:
        provider = app.extensions["regionguard_sso"] = Sso(app, cfg)

        @app.after_request
        def csp_allows_the_provider(resp: Response) -> Response:
            # Runs before security.security_headers (after_request runs in reverse), whose
            # setdefault keeps this: the same policy, but POST /logout may land on the provider.
            resp.headers.setdefault("Content-Security-Policy", csp_with_form_action(provider.form_action_origins()))
            return resp

    app.register_blueprint(oidc)


def csp_with_form_action(origins: list[str]) -> str:
    return CSP.replace("form-action 'self'", "form-action 'self' " + " ".join(origins))


def start_session(identity: SsoIdentity, now: datetime, lifetime: float) -> None:
    session.clear()  # no fixation: a fresh session (and CSRF token) at sign-in
    session.permanent = True
    session[SSO_SESSION_KEY] = {
        "name": identity.principal_name,
        "id": identity.stable_id,
        "display": identity.display_name,
        "role": identity.role,
        "until": now.timestamp() + lifetime,
    }


def _refused(exc: SignInRefused) -> tuple[str, int]:
    return render_template("oidc_refused.html", title=exc.title, detail=exc.detail, claim=exc.claim), exc.status


@oidc.get("/login")
def login() -> Any:
    provider = sso()
    if provider is None:
        return render_template(
            "error.html", code=404, name="Not configured", description="Single sign-on is not configured (web.oidc)."
        ), 404
    try:
        return provider.begin(safe_next(request.args.get("next")))
    except SignInRefused as exc:
        return _refused(exc)


@oidc.get("/callback")
def callback() -> Any:
    provider = sso()
    if provider is None:
        return render_template(
            "error.html", code=404, name="Not configured", description="Single sign-on is not configured (web.oidc)."
        ), 404
    ws = state()
    now = ws.clock.now()
    try:
        identity, next_path = provider.complete()
    except SignInRefused as exc:
        log.warning("SSO sign-in refused: %s", exc)
        if exc.audit:
            ws.store.add_event(
                AuditEvent(
                    kind=EventKind.LOGIN,
                    at=now,
                    actor="sso",
                    summary=f"single sign-on refused: {exc.title}",
                    severity="warning",
                    data={"via": "sso", "reason": exc.detail, "claim": exc.claim, "ip": request.remote_addr},
                )
            )
        return _refused(exc)
    lifetime = min(provider.cfg.session_lifetime, ws.settings.web.session_lifetime)
    start_session(identity, now, lifetime)
    csrf_token()
    ws.store.add_event(
        AuditEvent(
            kind=EventKind.LOGIN,
            at=now,
            actor=identity.principal_name,
            summary=f"{identity.display_name} signed in with {provider.cfg.display_name} as {identity.role}",
            data={
                "via": "sso",
                "stable_id": identity.stable_id,
                "display_name": identity.display_name,
                "issuer": identity.issuer,
                "role": identity.role,
                "claim": identity.claim,
                "matched": list(identity.matched),
                "ip": request.remote_addr,
            },
        )
    )
    log.info("sso sign-in: %s (%s) from %s", identity.principal_name, identity.role, request.remote_addr)
    return redirect(safe_next(next_path))


__all__ = [
    "SignInRefused",
    "Sso",
    "SsoIdentity",
    "certificate_credential",
    "identity_from_claims",
    "install",
    "principal_name",
    "sso",
]
