"""Local users (argon2id) and API tokens (stored as SHA-256 only)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane import users
from controlplane.store import Store, open_store
from tests.integration.web_seed import cheap_hashing, default_hashing

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cheap_hashing()
    path = tmp_path_factory.mktemp("users") / "empty.db"
    open_store("sqlite:///" + str(path), migrate=True).close()
    yield path
    default_hashing()


@pytest.fixture
def store(migrated: Path, tmp_path: Path) -> Iterator[Store]:
    shutil.copyfile(migrated, tmp_path / "u.db")
    s = open_store("sqlite:///" + str(tmp_path / "u.db"))
    yield s
    s.close()


def test_passwords_are_stored_as_argon2id_hashes_and_verified(store: Store) -> None:
    users.add_user(store, "otto", "operator", "a long enough secret", T0)
    row = store.user("otto")
    assert row is not None
    assert row.password_hash.startswith("$argon2id$") and "a long enough secret" not in row.password_hash
    assert users.authenticate(store, "otto", "a long enough secret") == users.Principal("otto", "operator")
    assert users.authenticate(store, "otto", "a long enough secreT") is None
    assert users.authenticate(store, "nobody", "a long enough secret") is None


@pytest.mark.parametrize(
    ("name", "role", "password", "field"),
    [("bad name!", "viewer", "x" * 12, "name"), ("ok", "root", "x" * 12, "role"), ("ok", "viewer", "short", "password")],
)
def test_bad_user_input_names_the_field(store: Store, name: str, role: str, password: str, field: str) -> None:
    with pytest.raises(users.UserError, match=f"^{field}:"):
        users.add_user(store, name, role, password, T0)
    assert store.users() == []


def test_api_tokens_are_shown_once_and_stored_hashed(store: Store) -> None:
    token = users.create_api_token(store, "deploy-bot", "operator", "ada", T0)
    assert token.startswith("rg_") and len(token) > 40
    row = store.api_token(users.token_hash(token))
    assert row is not None and row.token_hash != token and token not in str(row)
    assert users.authenticate_token(store, token, T0) == users.Principal("token:deploy-bot", "operator", "token")
    assert users.authenticate_token(store, token + "x", T0) is None
    store.revoke_api_token(row.id, T0)
    assert users.authenticate_token(store, token, T0) is None


def test_a_token_that_acts_for_a_user_stops_when_the_user_is_disabled_or_removed(store: Store) -> None:
    users.add_user(store, "otto", "operator", "correct horse battery staple", T0)
    token = users.create_api_token(store, "otto-script", "operator", "cli:root", T0, owner="otto")
    service = users.create_api_token(store, "ci", "viewer", "cli:root", T0)  # owned by nobody: unaffected
    assert users.authenticate_token(store, token, T0) is not None
    users.set_disabled(store, "otto", True)
    assert users.authenticate_token(store, token, T0) is None
    users.set_disabled(store, "otto", False)
    assert users.authenticate_token(store, token, T0) is not None
    users.remove_user(store, "otto")
    assert users.authenticate_token(store, token, T0) is None
    assert users.authenticate_token(store, service, T0) is not None


def test_a_token_cannot_hold_more_than_its_users_role_nor_act_for_a_disabled_user(store: Store) -> None:
    users.add_user(store, "vic", "viewer", "correct horse battery staple", T0)
    with pytest.raises(users.UserError, match="--role: 'admin' is more than user 'vic' holds"):
        users.create_api_token(store, "vic-admin", "admin", "cli:root", T0, owner="vic")
    users.set_disabled(store, "vic", True)
    with pytest.raises(users.UserError, match="--user: 'vic' is not an enabled user"):
        users.create_api_token(store, "vic-view", "viewer", "cli:root", T0, owner="vic")


@pytest.mark.parametrize("lift", ["passwd", "enable"])
def test_an_admin_setting_a_new_password_or_enabling_the_user_lifts_a_sign_in_lock(store: Store, lift: str) -> None:
    users.add_user(store, "otto", "operator", "a long enough secret", T0)
    for _ in range(3):
        users.record_login_failure(store, "Otto", "198.51.100.7", T0, 3, 900)
    assert users.login_locked(store, "otto", T0) is not None
    if lift == "passwd":
        users.change_password(store, "otto", "another long secret")
    else:
        users.set_disabled(store, "otto", True)
        assert users.login_locked(store, "otto", T0) is not None  # disabling keeps the lock
        users.set_disabled(store, "otto", False)
    assert users.login_locked(store, "otto", T0) is None
