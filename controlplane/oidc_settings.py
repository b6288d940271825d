"""The ``web.oidc:`` config section: dashboard sign-in with OpenID Connect.

Two kinds, chosen by ``kind:``:

- ``entra_id``: Microsoft Entra ID. The tenant, the client id, and a client
  secret (``client_secret_env``, the name of an environment variable) or a
  certificate (``client_certificate``). The issuer and the endpoints come from
  the tenant's discovery document on the cloud's sign-in host (public,
  usgov, china). The stable user id is the ``oid`` claim.
- ``generic``: any OpenID Connect provider by its issuer URL (Okta, Google,
  Keycloak, ...). The stable user id is the ``sub`` claim.

Roles come from a claim (``roles_claim``: ``roles`` for Entra app roles,
``groups`` for group ids, or any claim, e.g. ``realm_access.roles``) mapped
to regionguard roles by ``role_map``. Secrets never live in the file.

Example::

    web:
      local_users: true            # break-glass accounts; false turns them off
      oidc:
        kind: entra_id
        tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47
        client_id: 5b1f3c0e-0000-4000-8000-000000000001
        client_secret_env: REGIONGUARD_OIDC_CLIENT_SECRET
        roles_claim: roles
        role_map:
          admin: [RegionGuard.Admin]
          operator: [RegionGuard.Operator]
          viewer: [RegionGuard.Viewer]
        session_lifetime: 8h
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controlplane.durations import Duration

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_CLAIM = r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,119}$"
_TENANT = re.compile(r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[A-Za-z0-9][A-Za-z0-9.-]{0,252})$")
_MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

# Sign-in hosts of the Entra ID clouds (the national clouds have their own).
ENTRA_AUTHORITY_HOSTS = {
    "public": "https://login.microsoftonline.com",
    "usgov": "https://login.microsoftonline.us",
    "china": "https://login.chinacloudapi.cn",
}
ROLE_NAMES = ("viewer", "operator", "admin")


def check_provider_url(value: str, field: str) -> str:
    """https, or http on a loopback host (a provider run locally for tests); no query or fragment."""
    parts = urlsplit(value)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError(f"{value!r}: {field} must use https (plain http only on 127.0.0.1 or localhost)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r}: {field} must be an absolute https URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: {field} must not have a query or a fragment")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClientCertificate(_Section):
    """A PEM file holding the private key and the certificate registered with the provider."""

    path: str = Field(min_length=1)
    password_env: str | None = Field(default=None, pattern=_ENV_NAME, description="environment variable with the key's password")


class _SignIn(_Section):
    client_id: str = Field(min_length=1, max_length=200)
    client_secret_env: str | None = Field(default=None, pattern=_ENV_NAME)
    client_certificate: ClientCertificate | None = None
    display_name: str = Field(
        default="single sign-on", min_length=1, max_length=60, description="the sign-in button says 'Sign in with ...'"
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    redirect_uri: str | None = Field(
        default=None, description="the callback URL registered at the provider; default: this host's /auth/oidc/callback"
    )
    post_logout_redirect_uri: str | None = None
    roles_claim: str = Field(default="roles", pattern=_CLAIM)
    role_map: dict[Literal["viewer", "operator", "admin"], list[str]]
    session_lifetime: Duration = Field(default=8 * 3600.0, gt=0, le=7 * 86400.0)
    timeout: Duration = Field(default=10.0, gt=0, le=120.0, description="per HTTP call to the provider")

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, v: list[str]) -> list[str]:
        if "openid" not in v:
            raise ValueError(f"{v!r} must include 'openid'")
        return v

    @field_validator("redirect_uri", "post_logout_redirect_uri")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ValueError(f"{v!r} must be an absolute http(s) URL without a fragment")
        return v

    @field_validator("role_map")
    @classmethod
    def _some_values(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        if not any(v.values()):
            raise ValueError("map at least one claim value to a role (e.g. admin: [RegionGuard.Admin])")
        for role, values in v.items():
            for value in values:
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{role}: {value!r} is not a claim value")
        return v

    @model_validator(mode="after")
    def _one_credential(self) -> _SignIn:
        if self.client_secret_env and self.client_certificate:
            raise ValueError("give client_secret_env or client_certificate, not both")
        return self

    # -- what the web app needs, the same for every kind
    @property
    def discovery_url(self) -> str:
        raise NotImplementedError

    @property
    def stable_id_claim(self) -> str:
        return "sub"

    def role_for(self, values: list[str]) -> str | None:
        """The highest role any of ``values`` maps to, or None."""
        held = set(values)
        granted = [role for role, mapped in self.role_map.items() if held.intersection(mapped)]
        return max(granted, key=ROLE_NAMES.index, default=None)


class EntraIdSignIn(_SignIn):
    kind: Literal["entra_id"]
    tenant: str
    cloud: Literal["public", "usgov", "china"] = "public"
    authority_host: str | None = Field(
        default=None, description="overrides the cloud's sign-in host (a private cloud, or a local test provider)"
    )
    display_name: str = Field(default="Microsoft Entra ID", min_length=1, max_length=60)

    @field_validator("tenant")
    @classmethod
    def _single_tenant(cls, v: str) -> str:
        if v.lower() in _MULTI_TENANT:
            raise ValueError(f"{v!r} is multi-tenant: give your tenant id (a GUID) or its domain, e.g. contoso.onmicrosoft.com")
        if not _TENANT.match(v):
            raise ValueError(f"{v!r} is not a tenant id (GUID) or domain")
        return v

    @field_validator("authority_host")
    @classmethod
    def _authority(cls, v: str | None) -> str | None:
        return None if v is None else check_provider_url(v, "authority_host").rstrip("/")

    @model_validator(mode="after")
    def _needs_credential(self) -> EntraIdSignIn:
        if not self.client_secret_env and not self.client_certificate:
            raise ValueError("Entra ID needs client_secret_env (an environment variable name) or client_certificate")
        return self

    @property
    def authority(self) -> str:
        return f"{self.authority_host or ENTRA_AUTHORITY_HOSTS[self.cloud]}/{self.tenant}/v2.0"

    @property
    def discovery_url(self) -> str:
        return f"{self.authority}/.well-known/openid-configuration"

    @property
    def stable_id_claim(self) -> str:
        return "oid"  # Entra's 'sub' is pairwise per application; 'oid' is the user everywhere in the tenant


class GenericSignIn(_SignIn):
    kind: Literal["generic"]
    issuer: str

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        return check_provider_url(v, "issuer")

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"


OidcSettings = Annotated[EntraIdSignIn | GenericSignIn, Field(discriminator="kind")]

__all__ = ["ENTRA_AUTHORITY_HOSTS", "ClientCertificate", "EntraIdSignIn", "GenericSignIn", "OidcSettings", "check_provider_url"]
