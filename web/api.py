"""JSON API under ``/api/v1`` for scripts: same data, same RBAC, same audit as the pages.

Authenticate with ``Authorization: Bearer rg_...`` (``regionguard token create``).
Bad input is a 400 whose body names the field and the value:
``{"error": "invalid", "field": "region", "value": "mars", "reason": "..."}``;
a guardrail refusal is a 409 with the reason and the preview.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from controlplane import actions
from controlplane.domain import as_jsonable
from controlplane.errors import http_status
from controlplane.status import read_status
from web import readmodel
from web.security import actor, require_role, state

log = logging.getLogger(__name__)

api = Blueprint("api", __name__, url_prefix="/api/v1")


def _invalid(field: str, value: Any, reason: str) -> tuple[Response, int]:
    return jsonify({"error": "invalid", "field": field, "value": value, "reason": f"{field}: {value!r} {reason}"}), 400


def _now() -> datetime:
    return state().clock.now()


@api.get("/regions")
def regions() -> Any:
    ws = state()
    view = readmodel.overview(ws.settings, ws.store, _now(), ws.series_cache, sparks=False)  # no charts in JSON
    return jsonify(
        {
            "generated_at": view.now.isoformat(),
            "regions": [c.to_dict() for c in view.cards],
            "banners": [b.__dict__ for b in view.banners],
            "automation": view.automation.to_dict() if view.automation else None,
            "vantage_grid": view.grid.to_dict() if view.grid else None,
            "open_incidents": [i.id for i in view.open_incidents],
        }
    )


@api.get("/regions/<name>")
def region(name: str) -> Any:
    ws = state()
    if name not in ws.settings.region_names:
        reason = f"region: {name[:80]!r} is not a configured region"
        return jsonify({"error": "not_found", "field": "region", "value": name[:80], "reason": reason}), 404
    now = _now()
    card, grid = readmodel.region_card(ws.settings, ws.store, name, now)
    return jsonify({"generated_at": now.isoformat(), "region": card.to_dict(), "vantage_grid": grid.to_dict()})


@api.get("/targets")
def targets() -> Any:
    ws = state()
    now = _now()
    views = readmodel.target_views(read_status(ws.settings, ws.store, now))
    return jsonify({"generated_at": now.isoformat(), "targets": [v.to_dict() for v in views]})


@api.get("/events")
def events() -> Any:
    ws = state()
    args = request.args
    since = None
    if args.get("since"):
        try:
            since = datetime.fromisoformat(args["since"].replace("Z", "+00:00"))
        except ValueError:
            return _invalid("since", args["since"], "is not an ISO 8601 time (e.g. 2026-11-27T12:00:00Z)")
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    limit_raw = args.get("limit", "200")
    try:
        limit = int(limit_raw)
    except ValueError:
        return _invalid("limit", limit_raw, "is not a whole number")
    if not 1 <= limit <= 1000:
        return _invalid("limit", limit, "must be between 1 and 1000")
    region = args.get("region") or None
    if region is not None and region not in ws.settings.region_names:
        return _invalid("region", region, "is not a configured region")
    kinds = [k for k in (args.get("kind") or "").split(",") if k] or None
    found = ws.store.events(since=since, kinds=kinds, region=region, target=args.get("target") or None, limit=limit)
    return jsonify({"events": [as_jsonable(e) for e in found]})


@api.get("/incidents")
def incidents() -> Any:
    ws = state()
    args = request.args
    region = args.get("region") or None
    if region is not None and region not in ws.settings.region_names:
        return _invalid("region", region, "is not a configured region")
    status = args.get("state") or None
    if status is not None and status not in ("open", "closed"):
        return _invalid("state", status, "must be open or closed")
    days_raw = args.get("days", str(readmodel.INCIDENT_DAYS))
    try:
        days = int(days_raw)
    except ValueError:
        return _invalid("days", days_raw, "is not a whole number")
    if not 1 <= days <= 90:
        return _invalid("days", days, "must be between 1 and 90")
    limit_raw = args.get("limit", "100")
    try:
        limit = int(limit_raw)
    except ValueError:
        return _invalid("limit", limit_raw, "is not a whole number")
    if not 1 <= limit <= 1000:
        return _invalid("limit", limit, "must be between 1 and 1000")
    now = _now()
    listing = readmodel.incident_list(
        ws.settings, ws.store, now, region=region, state=status, outcome=args.get("outcome") or None, days=days, cache=ws.incident_cache
    )
    f = listing.figures
    return jsonify(
        {
            "generated_at": now.isoformat(),
            "days": days,
            "figures": {
                "count": f.count,
                "open": f.open,
                "time_to_detect_s": {"mean": f.detect_mean_s, "p95": f.detect_p95_s},
                "time_to_act_s": {"mean": f.act_mean_s, "p95": f.act_p95_s},
            },
            "incidents": [i.to_dict(now) for i in listing.incidents[:limit]],  # newest first
        }
    )


@api.get("/incidents/<incident_id>")
def incident(incident_id: str) -> Any:
    ws = state()
    inc = readmodel.incident(ws.settings, ws.store, incident_id)
    if inc is None:
        reason = f"incident: {incident_id[:80]!r} is not an incident id (region-YYYYMMDDTHHMMSSZ) with records"
        return jsonify({"error": "not_found", "field": "incident", "value": incident_id[:80], "reason": reason}), 404
    now = _now()
    body = inc.to_dict(now)
    body["verdicts"] = [as_jsonable(t) for t in inc.verdicts]
    body["evidence"] = [as_jsonable(t) for t in inc.evidence]
    return jsonify(body)


@api.get("/overrides")
def overrides() -> Any:
    ws = state()
    active_raw = (request.args.get("active") or "").lower()
    if active_raw not in ("", "true", "false", "1", "0"):
        return _invalid("active", request.args.get("active"), "must be true or false")
    now = _now()
    found = ws.store.active_overrides(now) if active_raw in ("true", "1") else ws.store.overrides(limit=500)
    active_ids = {o.id for o in ws.store.active_overrides(now)}
    return jsonify({"overrides": [dict(as_jsonable(o), active=o.id in active_ids) for o in found]})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _json(text: str) -> Any:
    """Strict JSON: no NaN or Infinity (bare or overflowing), a bounded depth; ValueError says what is wrong."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("is nested too deeply") from None


def _body(optional: bool = False) -> dict[str, Any] | tuple[Response, int]:
    text = request.get_data(as_text=True)
    if optional and not text.strip():
        return {}
    try:
        data = _json(text)
    except ValueError as exc:
        return _invalid("body", text[:60], f"is not valid JSON: {str(exc)[:120]}")
    if not isinstance(data, dict):
        return _invalid("body", text[:60], "is not a JSON object")
    return data


@api.post("/overrides")
@require_role("operator")
def create_override() -> Any:
    """Body: action (drain|restore|failover|pin|freeze|unfreeze), reason, region, target,
    weight, priority, expires_in ("30m"), force, confirm, preview_only."""
    ws = state()
    data = _body()
    if isinstance(data, tuple):
        return data
    try:
        req = actions.parse_request(data)
        if data.get("preview_only") in (True, "true", "1"):
            p = actions.preview(ws.settings, ws.store, req, actor(), _now())
            return jsonify({"preview": p.to_dict()})
        result = actions.execute(
            ws.settings, ws.store, req, actor(), _now(), expected_digest=data.get("digest") or None, require_digest=True
        )
    except actions.InvalidAction as exc:
        return jsonify(exc.to_dict()), http_status(exc)
    except actions.NotAllowed as exc:
        return jsonify({"error": exc.error, "reason": str(exc)}), http_status(exc)
    except actions.ActionRefused as exc:
        return jsonify({"error": exc.error, "reason": exc.reason, "preview": exc.preview.to_dict() if exc.preview else None}), http_status(
            exc
        )
    return jsonify(result.to_dict()), 201


@api.route("/overrides/<int:override_id>", methods=["DELETE"])
@api.post("/overrides/<int:override_id>/lift")
@require_role("operator")
def lift_override(override_id: int) -> Any:
    ws = state()
    data = _body(optional=True)
    if isinstance(data, tuple):
        return data
    reason = data.get("reason") or request.args.get("reason") or ""
    if not isinstance(reason, str):
        return _invalid("reason", reason, "must be a string")
    try:
        done = actions.lift(ws.settings, ws.store, override_id, actor(), reason, _now())
    except actions.InvalidAction as exc:
        return jsonify(exc.to_dict()), http_status(exc)
    except actions.NotAllowed as exc:
        return jsonify({"error": exc.error, "reason": str(exc)}), http_status(exc)
    except actions.ActionRefused as exc:
        return jsonify({"error": exc.error, "reason": exc.reason}), http_status(exc)
    return jsonify({"lifted": as_jsonable(done)})
