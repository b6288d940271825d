"""How a failure is reported: the one map from an error to a CLI exit code and an HTTP status.

Every error a user can cause or meet derives from one of four kinds, and
the CLI, the dashboard and the JSON API all answer from these attributes:

| kind | meaning | CLI exit | HTTP |
| --- | --- | --- | --- |
| :class:`BadInput` | the input is wrong: names the field and the value | 2 | 400 |
| :class:`Forbidden` | the actor's role may not do this | 3 | 403 |
| :class:`Refused` | a guardrail, a freeze, a checksum or a held lease says no | 3 | 409 |
| :class:`Unavailable` | a dependency (the database) cannot be reached | 4 | 503 |

Anything else is a failure: exit 1, HTTP 500.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_DB = 0, 1, 2, 3, 4


class ReportedError(Exception):
    """An error with a known way to be reported."""

    error: ClassVar[str] = "failed"
    exit_code: ClassVar[int] = EXIT_FAILED
    http_status: ClassVar[int] = 500


class BadInput(ReportedError, ValueError):
    error = "invalid"
    exit_code = EXIT_USAGE
    http_status = 400


class Forbidden(ReportedError, PermissionError):
    error = "forbidden"
    exit_code = EXIT_REFUSED
    http_status = 403


class Refused(ReportedError):
    error = "refused"
    exit_code = EXIT_REFUSED
    http_status = 409


class Unavailable(ReportedError):
    error = "unavailable"
    exit_code = EXIT_DB
    http_status = 503


def exit_code(exc: BaseException) -> int:
    """The CLI exit code for ``exc``."""
    return exc.exit_code if isinstance(exc, ReportedError) else EXIT_FAILED


def http_status(exc: BaseException) -> int:
    """The HTTP status for ``exc``."""
    return exc.http_status if isinstance(exc, ReportedError) else 500
