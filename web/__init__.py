"""The dashboard and JSON API (Flask). See :func:`web.app.create_app`."""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Lazy re-export of :func:`web.app.create_app` (keeps ``import web`` cheap)."""
    from web.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app"]
