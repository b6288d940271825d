"""One map from an error to the CLI's exit code and the web's HTTP status."""

from __future__ import annotations

import pytest

from controlplane.actions import ActionRefused, InvalidAction, NotAllowed
from controlplane.config import ConfigError
from controlplane.errors import exit_code, http_status
from controlplane.replay import TimelineError
from controlplane.store import DatabaseUnavailable
from controlplane.users import UserError


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (InvalidAction("region", "nowhere", "is not a configured region"), 2, 400),
        (ConfigError("x.yaml", ["regions: required"]), 2, 400),
        (UserError("name: '' is empty"), 2, 400),
        (TimelineError("t.yaml", ["duration: required"]), 2, 400),
        (NotAllowed("viewers may not drain"), 3, 403),
        (ActionRefused("min_serving: would leave 0 serving"), 3, 409),
        (DatabaseUnavailable("database unavailable"), 4, 503),
        (RuntimeError("boom"), 1, 500),
    ],
)
def test_every_surface_reports_an_error_the_same_way(error: Exception, code: int, status: int) -> None:
    assert (exit_code(error), http_status(error)) == (code, status)
