"""Logs readable at INFO: chatty libraries quiet unless DEBUG; actor names are not mistaken for secrets."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from controlplane.logging_setup import NOISY_LOGGERS, LoggingSettings, configure_from_settings, scrub


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def test_azure_core_http_logging_and_alembic_are_quiet_at_info() -> None:
    stream = io.StringIO()
    configure_from_settings(LoggingSettings(level="INFO"), stream)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: 'https://management.azure.com/...'")
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("controlplane.runtime.worker").info("worker started")
    text = stream.getvalue()
    assert "worker started" in text
    assert "Request URL" not in text and "Context impl" not in text
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").warning("a retry")
    assert "a retry" in stream.getvalue()


def test_at_debug_the_libraries_speak_again() -> None:
    stream = io.StringIO()
    configure_from_settings(LoggingSettings(level="DEBUG"), stream)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: x")
    assert "Request URL" in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("drain by token:s-operator", "token:s-operator"),
        ("actor=token:deploy-bot lifted #4", "token:deploy-bot"),
    ],
)
def test_an_actor_name_is_not_mistaken_for_a_secret(text: str, kept: str) -> None:
    assert kept in scrub(text)


@pytest.mark.parametrize(
    "text", ["token: abc123secret", "token=abc123secret", '{"token": "abc123secret"}', '"token":"abc123secret"', "api-key: abc123secret"]
)
def test_a_token_value_is_still_masked(text: str) -> None:
    assert "abc123secret" not in scrub(text)
