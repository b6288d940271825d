"""The web.oidc config section, the claims -> role mapping, the principal's name, and the certificate credential."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from controlplane.config import ConfigError, parse_settings
from controlplane.oidc_settings import EntraIdSignIn, GenericSignIn
from web.oidc import SignInRefused, certificate_credential, identity_from_claims, principal_name

ROLE_MAP = {"admin": ["RG.Admin"], "operator": ["RG.Operator"], "viewer": ["RG.Viewer"]}
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _config(web: dict[str, Any]) -> dict[str, Any]:
    return {
        "regions": [
            {
                "name": "eastus",
                "azure_region": "eastus",
                "endpoints": [
                    {"name": "e", "base_url": "https://e.example.test", "deployment": "d", "auth": {"kind": "api_key", "env": "K"}}
                ],
            }
        ],
        "web": web,
    }


def entra(**over: Any) -> dict[str, Any]:
    return {"kind": "entra_id", "tenant": TENANT, "client_id": "app", "client_secret_env": "SECRET", "role_map": ROLE_MAP, **over}


def problems(web: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_settings(_config(web))
    return err.value.problems


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("cloud", "host"),
    [
        ("public", "https://login.microsoftonline.com"),
        ("usgov", "https://login.microsoftonline.us"),
        ("china", "https://login.chinacloudapi.cn"),
    ],
)
def test_entra_discovery_comes_from_the_tenant_on_the_clouds_sign_in_host(cloud: str, host: str) -> None:
    oidc = parse_settings(_config({"oidc": entra(cloud=cloud)})).web.oidc
    assert isinstance(oidc, EntraIdSignIn)
    assert oidc.discovery_url == f"{host}/{TENANT}/v2.0/.well-known/openid-configuration"
    assert oidc.stable_id_claim == "oid"


def test_a_generic_provider_is_found_by_its_issuer() -> None:
    oidc = parse_settings(
        _config({"oidc": {"kind": "generic", "issuer": "https://sso.example.com/realms/ops", "client_id": "rg", "role_map": ROLE_MAP}})
    ).web.oidc
    assert isinstance(oidc, GenericSignIn)
    assert oidc.discovery_url == "https://sso.example.com/realms/ops/.well-known/openid-configuration"
    assert oidc.stable_id_claim == "sub"


@pytest.mark.parametrize("tenant", ["common", "organizations", "consumers"])
def test_a_multi_tenant_authority_is_refused(tenant: str) -> None:
    [p] = problems({"oidc": entra(tenant=tenant)})
    assert p.startswith("web.oidc.tenant:") and "multi-tenant" in p


def test_entra_needs_a_secret_or_a_certificate_but_not_both() -> None:
    [p] = problems({"oidc": entra(client_secret_env=None)})
    assert "client_secret_env" in p and "client_certificate" in p
    [p] = problems({"oidc": entra(client_certificate={"path": "/etc/rg/cert.pem"})})
    assert "not both" in p


def test_a_plain_http_issuer_is_refused_unless_it_is_loopback() -> None:
    [p] = problems({"oidc": {"kind": "generic", "issuer": "http://sso.example.com", "client_id": "rg", "role_map": ROLE_MAP}})
    assert p.startswith("web.oidc.issuer:") and "https" in p
    ok = parse_settings(_config({"oidc": {"kind": "generic", "issuer": "http://127.0.0.1:5555", "client_id": "rg", "role_map": ROLE_MAP}}))
    assert ok.web.oidc is not None


def test_role_map_names_regionguard_roles_and_at_least_one_value() -> None:
    assert any("web.oidc.role_map" in p and "boss" in p for p in problems({"oidc": entra(role_map={"boss": ["X"]})}))
    assert any("map at least one claim value" in p for p in problems({"oidc": entra(role_map={"admin": []})}))


def test_the_openid_scope_cannot_be_dropped() -> None:
    [p] = problems({"oidc": entra(scopes=["profile"])})
    assert p.startswith("web.oidc.scopes:") and "openid" in p


def test_local_users_can_only_be_turned_off_when_sso_is_configured() -> None:
    [p] = problems({"local_users": False})
    assert "needs an oidc section" in p
    assert parse_settings(_config({"local_users": False, "oidc": entra()})).web.local_users is False


def test_without_an_oidc_section_nothing_changes() -> None:
    web = parse_settings(_config({})).web
    assert web.oidc is None and web.local_users is True


# ---------------------------------------------------------------- claims -> who and which role


def cfg(**over: Any) -> EntraIdSignIn:
    return EntraIdSignIn.model_validate(entra(**over))


def test_the_highest_mapped_role_wins_and_unmapped_values_are_ignored() -> None:
    who = identity_from_claims(cfg(), {"oid": "o-1", "name": "Ada", "roles": ["Other", "RG.Viewer", "RG.Admin"], "iss": "https://i"})
    assert (who.role, who.stable_id, who.display_name, who.matched) == ("admin", "oid:o-1", "Ada", ("RG.Viewer", "RG.Admin"))


def test_a_missing_roles_claim_names_the_claim_and_the_roles_to_ask_for() -> None:
    with pytest.raises(SignInRefused) as err:
        identity_from_claims(cfg(), {"oid": "o-1", "name": "Nora"})
    assert err.value.status == 403 and err.value.claim == "roles"
    assert "no 'roles' claim" in err.value.detail and "RG.Operator" in err.value.detail and "Nora" in err.value.detail


def test_group_overage_says_why_the_groups_claim_is_missing() -> None:
    claims = {"oid": "o-1", "_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph"}}}
    with pytest.raises(SignInRefused) as err:
        identity_from_claims(cfg(roles_claim="groups"), claims)
    assert err.value.claim == "groups" and "too many groups" in err.value.detail


def test_a_nested_claim_can_carry_the_roles() -> None:
    c = GenericSignIn.model_validate(
        {
            "kind": "generic",
            "issuer": "https://kc.example/realms/ops",
            "client_id": "rg",
            "roles_claim": "realm_access.roles",
            "role_map": ROLE_MAP,
        }
    )
    assert identity_from_claims(c, {"sub": "s-1", "realm_access": {"roles": ["RG.Operator"]}}).role == "operator"


def test_entra_refuses_a_token_without_oid() -> None:
    with pytest.raises(SignInRefused) as err:
        identity_from_claims(cfg(), {"sub": "pairwise", "roles": ["RG.Admin"]})
    assert err.value.claim == "oid"


def test_the_principal_name_fits_the_audit_columns_and_keeps_the_stable_id() -> None:
    assert principal_name("Alice  Example", "oid:3f2c") == "Alice Example <oid:3f2c>"
    assert principal_name("Bob <oid:b0b>\n", "oid:3f2c") == "Bob oid:b0b <oid:3f2c>"  # no look-alike stable id
    long = principal_name("A" * 300, "oid:" + "7" * 36)
    assert len(long) <= 120 and long.endswith("<oid:" + "7" * 36 + ">")
    huge = principal_name("Bob", "sub:" + "x" * 255)
    assert len(huge) <= 120 and huge == principal_name("Bob", "sub:" + "x" * 255) and "sub#sha256:" in huge


# ---------------------------------------------------------------- certificate credential (private_key_jwt)


def _pem(tmp_path: Path, password: bytes | None = None) -> tuple[Path, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regionguard")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path = tmp_path / "client.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return path, cert


def test_a_certificate_signs_a_client_assertion_entra_id_can_match_to_it(tmp_path: Path) -> None:
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    path, cert = _pem(tmp_path, password=b"pem-pass")
    key, headers = certificate_credential(str(path), "pem-pass")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert headers["x5t#S256"] == base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()

    class Auth:
        client_id = "app-id"
        client_secret = key

    endpoint = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assertion = PrivateKeyJWT(alg="PS256", headers=headers).sign(Auth(), endpoint)
    public = RSAKey.import_key(cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    token = jwt.decode(assertion, public, registry=JWSRegistry(algorithms=["PS256"]))
    assert token.header["alg"] == "PS256" and token.header["x5t#S256"] == headers["x5t#S256"]
    assert (token.claims["iss"], token.claims["sub"], token.claims["aud"]) == ("app-id", "app-id", endpoint)
    assert token.claims["jti"] and token.claims["exp"] > token.claims["iat"]


def test_an_unreadable_certificate_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"client_certificate\.path"):
        certificate_credential(str(tmp_path / "missing.pem"), None)
    (tmp_path / "junk.pem").write_text("not a pem")
    with pytest.raises(ConfigError, match="must hold a PEM private key"):
        certificate_credential(str(tmp_path / "junk.pem"), None)
