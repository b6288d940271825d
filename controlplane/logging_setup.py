"""Structured logs: JSON lines or ``key=value`` text, request ids, no secrets.

``configure_logging(format, level)`` installs one handler on the root logger
(calling it again replaces it). Every record passes a :class:`SecretScrubber`
first, which masks API keys, bearer tokens, SAS signatures, webhook URLs and
any value registered with :func:`register_secret` — in the message, its
arguments, ``extra=`` fields and the formatted traceback.

Request ids: ``with request_context("abc123"):`` (or ``set_request_id``) puts
``request_id`` on every record logged in that context (thread / task).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, field_validator

MASK = "***"
_HANDLER_NAME = "regionguard"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("regionguard_request_id", default=None)


class LoggingSettings(BaseModel):
    """The ``logging:`` config section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["text", "json"] = "text"
    level: str = "INFO"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        name = value.upper()
        if name not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"{value!r} is not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
        return name


# ---------------------------------------------------------------- secret scrubbing

_SECRET_NAMES = r"api[-_]?key|x-api-key|ocp-apim-subscription-key|authorization|password|passwd|client[-_]?secret|secret|access[-_]?token|refresh[-_]?token|id[-_]?token|routing[-_]?key|token"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer <token> / Basic <b64>
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), r"\1 " + MASK),
    # JWTs anywhere
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    # query parameters that carry secrets: sig= (SAS / Teams workflows), key=, code=, token= ...
    (
        re.compile(
            r"([?&;](?:sig|key|code|token|access_token|api-key|api_key|apikey|subscription-key|client_secret|password)=)[^&#\s\"'<>]+",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    # Slack / Teams / Office webhook URLs: the path is the secret
    (re.compile(r"(https://hooks\.slack\.com/)[^\s\"'<>]+"), r"\1" + MASK),
    (re.compile(r"(https://[A-Za-z0-9.-]*webhook\.office\.com/)[^\s\"'<>]+"), r"\1" + MASK),
    # "api-key": "value" / api-key: value / api_key=value / password='x'
    (
        # a bare colon needs a space after it ("token: abc"): "token:s-operator" is an actor name, not a secret
        re.compile(
            r"([\"']?\b(?:" + _SECRET_NAMES + r")\b(?:[\"']\s*[:=]\s*|\s*=\s*|\s*:\s+)[\"']?)(?!Bearer\b|Basic\b|\*\*\*)[^\s\"',;&}]+",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
]
_SECRET_KEY = re.compile(
    r"^(?:api[-_]?key|.*_api_key|x[-_]api[-_]key|authorization|.*password|passwd|.*secret|access[-_]?token|refresh[-_]?token|id[-_]?token|routing[-_]?key|token|bearer|.*webhook_url)$",
    re.IGNORECASE,
)

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears in a log record (min. 6 characters)."""
    if value and len(value) >= 6:
        with _registered_lock:
            _registered.add(value)


def scrub(text: str) -> str:
    """The text with every known kind of secret masked."""
    if not text:
        return text
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_value(key: str, value: Any) -> Any:
    """Mask a field by its name (``api_key=...``) or its content."""
    if _SECRET_KEY.match(key) and value not in (None, "", MASK):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(key, v) for v in value]
    return value


# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class SecretScrubber(logging.Filter):
    """Masks secrets in the message, its args, extra fields and the traceback. Never drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = scrub(message), None
        for key, value in extra_fields(record).items():
            setattr(record, key, scrub_value(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` from the current context when the record has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            rid = request_id_var.get()
            if rid is not None:
                record.request_id = rid
        return True


def set_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    return request_id_var.set(request_id)


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


# ---------------------------------------------------------------- formatters


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for key, value in extra_fields(record).items():
            doc.setdefault(key, _jsonable(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False)


_BARE = re.compile(r"^[A-Za-z0-9_.:/@+*-]+$")


def _kv(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(_jsonable(value), ensure_ascii=False)
        if isinstance(value, dict | list | tuple)
        else str(value)
    )
    if text and _BARE.match(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=INFO logger=x msg="..." key=value`` (logfmt)."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = [("ts", _timestamp(record)), ("level", record.levelname), ("logger", record.name), ("msg", record.getMessage())]
        pairs += sorted(extra_fields(record).items())
        line = " ".join(f"{k}={_kv(v)}" for k, v in pairs)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += " exc=" + json.dumps(record.exc_text, ensure_ascii=False)
        return line


def configure_logging(format: str = "text", level: str | int = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Install (or replace) regionguard's handler on the root logger and return it."""
    if format not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {format!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(SecretScrubber())
    handler.setFormatter(JsonFormatter() if format == "json" else KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


# Libraries that talk a lot at INFO: azure-core logs every HTTP request and response
# (nearly all of a worker's lines), Alembic its start-up, the scheduler every job run.
NOISY_LOGGERS = ("azure", "alembic", "httpx", "httpcore", "apscheduler.executors", "apscheduler.scheduler", "waitress.queue", "urllib3")


def configure_from_settings(settings: LoggingSettings, stream: TextIO | None = None) -> logging.Handler:
    """The scrubbing handler at the configured level; chatty libraries at WARNING unless the level is DEBUG."""
    handler = configure_logging(settings.format, settings.level, stream)
    quiet = str(settings.level).upper() != "DEBUG"
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    return handler
