"""Operator action requests: parsing names the bad field and value (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane import actions
from controlplane.actions import InvalidAction


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        ({"action": "explode", "reason": "x"}, "action", "explode"),
        ({"action": "drain", "reason": "xyz", "expires_in": "soon"}, "expires_in", "soon"),
        ({"action": "drain", "reason": "xyz", "expires_in": "90d"}, "expires_in", "90d"),
        ({"action": "pin", "reason": "xyz", "weight": "ten"}, "weight", "ten"),
        ({"action": "pin", "reason": "xyz", "weight": True}, "weight", True),
        ({"action": "drain", "reason": 5}, "reason", 5),
        ({"action": "drain", "reason": "xyz", "force": "maybe"}, "force", "maybe"),
    ],
)
def test_parse_request_names_the_bad_field_and_value(data: dict[str, Any], field: str, value: Any) -> None:
    with pytest.raises(InvalidAction) as bad:
        actions.parse_request(data)
    assert (bad.value.field, bad.value.value) == (field, value)
    assert bad.value.to_dict()["field"] == field
