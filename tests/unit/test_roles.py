"""Roles are ordered viewer < operator < admin (no database)."""

from __future__ import annotations

from controlplane import users


def test_roles_are_ordered_viewer_operator_admin() -> None:
    assert users.role_allows("admin", "operator") and users.role_allows("operator", "operator")
    assert not users.role_allows("viewer", "operator") and not users.role_allows("operator", "admin")
    assert not users.role_allows("unknown", "viewer")
