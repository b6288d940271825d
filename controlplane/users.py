"""Local users and API tokens: who may look, who may act, who may force.

Passwords are hashed with Argon2id (argon2-cffi); the hash carries its own
parameters, so stronger defaults later still verify old hashes (and rehash
them on the next successful login). API tokens are 256-bit random strings;
only their SHA-256 is stored (a fast hash is fine for high-entropy secrets),
so a database leak does not leak usable tokens.

Roles are ordered: viewer (read) < operator (overrides) < admin (force, users).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from controlplane.domain import AuditEvent, EventKind
from controlplane.errors import BadInput
from controlplane.store import Store

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,79}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
TOKEN_PREFIX = "rg_"

_hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)
# A hash of a random password: verifying against it when the user does not
# exist keeps the response time of "no such user" equal to "wrong password".
_DUMMY_HASH: str | None = None


class UserError(BadInput):
    """Bad input for a user or token command; the message names the field and value."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a logged-in user or an API token, with its role."""

    name: str
    role: str
    via: str = "session"  # session | token | cli

    def can(self, needed: str) -> bool:
        return role_allows(self.role, needed)


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` is at least ``needed`` (viewer < operator < admin)."""
    return _RANK.get(role, -1) >= _RANK[needed]


def set_hasher(hasher: PasswordHasher) -> None:
    """Replace the password hasher (tests use cheap parameters; production keeps the default)."""
    global _hasher, _DUMMY_HASH
    _hasher = hasher
    _DUMMY_HASH = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _check_role(role: str, field: str = "role") -> None:
    if role not in ROLES:
        raise UserError(f"{field}: {role!r} is not one of {', '.join(ROLES)}")


def _check_name(name: str, field: str = "name") -> None:
    if not USER_NAME.match(name or ""):
        raise UserError(f"{field}: {name!r} is not a valid name (letters, digits, . _ @ -; at most 80)")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password: must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"password: must be at most {MAX_PASSWORD_LENGTH} characters")


def add_user(store: Store, name: str, role: str, password: str, now: datetime) -> None:
    """Create a user (or reset an existing one's role and password)."""
    _check_name(name)
    _check_role(role)
    _check_password(password)
    store.add_user(name, role, hash_password(password), now)
    log.info("user %s saved with role %s", name, role)


def authenticate(store: Store, name: str, password: str) -> Principal | None:
    """The user if the password is right and the account enabled, else None."""
    global _DUMMY_HASH
    user = store.user(name) if USER_NAME.match(name or "") else None
    if user is None or user.disabled:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
        verify_password(_DUMMY_HASH, password)  # same cost as a real check
        return None
    if not verify_password(user.password_hash, password):
        return None
    try:
        if _hasher.check_needs_rehash(user.password_hash):
            store.set_password_hash(name, hash_password(password))
    except InvalidHashError:  # pragma: no cover - verify would have failed first
        pass
    return Principal(name=user.name, role=user.role, via="session")


def current_role(store: Store, name: str, session_version: int | None = None) -> str | None:
    """The role of an enabled user now (so a demotion takes effect on the next request).

    With ``session_version`` (what the session carried from its login), None as
    well once the user's sessions were ended since (logout, new password, disable).
    """
    user = store.user(name)
    if user is None or user.disabled:
        return None
    if session_version is not None and session_version != user.session_version:
        return None
    return user.role


def session_version(store: Store, name: str) -> int:
    user = store.user(name)
    return 0 if user is None else user.session_version


def change_password(store: Store, name: str, password: str) -> None:
    """A new password; every session of the user ends."""
    _check_password(password)
    if store.user(name) is None:
        raise UserError(f"name: no user named {name!r}")
    store.set_password_hash(name, hash_password(password), end_sessions=True)
    clear_login_failures(store, name)  # an admin's deliberate act: a sign-in lock on the name ends too
    log.info("user %s: password changed, sessions ended, any sign-in lock lifted", name)


def set_disabled(store: Store, name: str, disabled: bool) -> None:
    """Disable (sessions end at once) or enable a user."""
    if not store.set_user_disabled(name, disabled):
        raise UserError(f"name: no user named {name!r}")
    if not disabled:
        clear_login_failures(store, name)  # enabling lifts a sign-in lock as well
    log.info("user %s %s", name, "disabled" if disabled else "enabled")


# Failed sign-ins are counted per submitted name, whether or not such a user
# exists: an unknown name gets the same answers, the same lock and the same
# work as a real one (so the answers never tell which names exist), and the
# count holds across web processes. The name is normalised (NFKC, case-folded,
# at most 80 characters) and only its SHA-256 is stored: no submitted text
# (often a password typed into the wrong field) lands in the database. At most
# LOGIN_THROTTLE_MAX_NAMES names are counted at once; rows expire after
# lockout_for, and a full table gives up the oldest unlocked name first.
LOGIN_THROTTLE_MAX_NAMES = 10_000


def login_key(name: str) -> str:
    """The throttle's key for a submitted name: SHA-256 of its normal form (NFKC, case-folded, stripped, 80 characters at most)."""
    return hashlib.sha256(_normal_name(name)).hexdigest()


def _normal_name(name: str) -> bytes:
    return unicodedata.normalize("NFKC", name[:400]).strip().casefold()[:80].encode("utf-8", "replace")


_LOG_TAG_KEY = secrets.token_bytes(16)  # per process: a tag cannot be tested offline against guessed names


def login_tag(name: str) -> str:
    """How logs name a submitted sign-in name: ``#`` and 12 hex digits of a keyed hash of its normal form.

    Never the text itself -- people type passwords into the name field -- but
    stable within a process, so on-call can see that attempts were for one name."""
    return "#" + hmac.new(_LOG_TAG_KEY, _normal_name(name), hashlib.sha256).hexdigest()[:12]


def login_locked(store: Store, name: str, now: datetime) -> float | None:
    """Seconds until ``name`` may try to sign in again, or None; shared by every web process, existing user or not."""
    row = store.login_throttle(login_key(name))
    if row is None or row.locked_until is None:
        return None
    left = (row.locked_until - now).total_seconds()
    return left if left > 0 else None


def record_login_failure(store: Store, name: str, ip: str, now: datetime, lock_after: int, lock_for_s: float) -> float | None:
    """Count a failed sign-in for the submitted ``name``; lock it once ``lock_after`` fail within ``lock_for_s``.

    Returns the seconds the name is now locked for (None: not locked). The
    same for a name that is no account: the answers must not tell them apart.
    Runs under one cross-process lock, so the count holds whichever web
    process a guess reaches. Locking a real account is a warning in the
    audit trail naming the account; locking any other name is a log line
    that does not repeat the name.
    """
    key = login_key(name)
    window = timedelta(seconds=lock_for_s)
    with store.exclusive("login_throttle"):
        store.expire_login_throttle(now - window, now)
        row = store.login_throttle(key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            return (row.locked_until - now).total_seconds()  # another process locked it meanwhile
        recent = [t for t in (row.failures if row is not None else ()) if now - t < window] + [now]
        locked_until = now + window if len(recent) >= lock_after else None
        kept = store.save_login_throttle(key, [] if locked_until else recent[-lock_after:], locked_until, now, LOGIN_THROTTLE_MAX_NAMES)
        if not kept:
            log.warning(
                "sign-in throttle full (%d names, every one locked): a failed sign-in from %s is not counted", LOGIN_THROTTLE_MAX_NAMES, ip
            )
            return None
        if locked_until is None:
            return None
        accounts = [u.name for u in store.users() if login_key(u.name) == key]  # the same look-up whatever the name
        for account in accounts:
            store.add_event(
                AuditEvent(
                    kind=EventKind.LOGIN,
                    at=now,
                    actor=account,
                    summary=f"account {account} locked for {lock_for_s / 60:.0f} min after {lock_after} failed sign-ins (last from {ip})",
                    severity="warning",
                    data={"locked_until": locked_until.isoformat(), "ip": ip},
                )
            )
            log.warning("account %s locked after %d failed sign-ins (last from %s)", account, lock_after, ip)
        if not accounts:
            log.warning("a user name that is no account locked after %d failed sign-ins (last from %s)", lock_after, ip)
    return lock_for_s


def clear_login_failures(store: Store, name: str) -> None:
    store.clear_login_throttle(login_key(name))


def remove_user(store: Store, name: str) -> None:
    if not store.remove_user(name):
        raise UserError(f"name: no user named {name!r}")
    log.info("user %s removed", name)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


OWNER_PREFIX = "user:"
"""``created_by`` of a token that acts for a dashboard user: it lives only while that user may sign in."""


def create_api_token(store: Store, name: str, role: str, created_by: str, now: datetime, owner: str | None = None) -> str:
    """Create a bearer token for scripts; returns the plaintext, shown once and never stored.

    ``owner``: the dashboard user the token acts for. It may not hold more
    than that user's role, and it stops working the moment the user is
    disabled or removed.
    """
    _check_name(name)
    _check_role(role)
    if owner is not None:
        user = store.user(owner)
        if user is None or user.disabled:
            raise UserError(f"--user: {owner!r} is not an enabled user")
        if not role_allows(user.role, role):
            raise UserError(f"--role: {role!r} is more than user {owner!r} holds ({user.role})")
        created_by = OWNER_PREFIX + owner
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_api_token(name, token_hash(token), role, created_by, now)
    log.info("api token %s created with role %s by %s", name, role, created_by)
    return token


def authenticate_token(store: Store, token: str, now: datetime) -> Principal | None:
    """The token's principal if it is live; stamps its last use."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = store.api_token(token_hash(token), now)
    if row is None:
        return None
    if row.created_by.startswith(OWNER_PREFIX):
        owner = store.user(row.created_by.removeprefix(OWNER_PREFIX))
        if owner is None or owner.disabled:
            return None  # the user it acts for may no longer sign in: neither may the token
    return Principal(name=f"token:{row.name}", role=row.role, via="token")


__all__ = [
    "ROLES",
    "Principal",
    "UserError",
    "add_user",
    "authenticate",
    "authenticate_token",
    "change_password",
    "create_api_token",
    "current_role",
    "hash_password",
    "remove_user",
    "role_allows",
    "session_version",
    "set_disabled",
    "set_hasher",
    "token_hash",
    "verify_password",
]
