"""Dashboard pages: overview, region, target, timeline, and the action flow.

Action flow: a control form posts to ``/actions/preview`` (nothing is
written; the page shows the plan-preview sentence, what changes per target,
and any refusal), then the operator confirms on that page, which posts to
``/actions/execute`` with the preview's digest; if anything changed in
between, the new preview is shown again instead of acting on a stale one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from controlplane import actions
from controlplane.config import Target
from controlplane.domain import ChangeStatus, OverrideKind
from controlplane.errors import http_status
from controlplane.status import read_status
from web import readmodel, traffic
from web.auth import safe_next
from web.security import actor, require_role, state

log = logging.getLogger(__name__)

dashboard = Blueprint("dashboard", __name__)

ACTION_LABELS = {
    "drain": "Drain region",
    "restore": "Restore region",
    "failover": "Fail over",
    "pin": "Pin",
    "freeze": "Freeze automation",
    "unfreeze": "Unfreeze automation",
}


def _now() -> datetime:
    return state().clock.now()


def _controls_context(region: str | None = None, target: Target | None = None) -> dict[str, Any]:
    settings = state().settings
    if region is not None:
        targets = [t for t in settings.targets if region in t.endpoints]
    elif target is not None:
        targets = [target]
    else:
        targets = list(settings.targets)
    return {
        "control_targets": targets,
        "priority_targets": [t for t in targets if t.routing == "priority"],
        "all_targets": list(settings.targets),
        "regions": settings.region_names,
    }


@dashboard.get("/")
def overview() -> Any:
    ws = state()
    view = readmodel.overview(ws.settings, ws.store, _now(), ws.series_cache)
    return render_template("overview.html", view=view, refresh=current_app.config["REFRESH_SECONDS"], **_controls_context())


@dashboard.get("/partials/overview")
def overview_partial() -> Any:
    ws = state()
    view = readmodel.overview(ws.settings, ws.store, _now(), ws.series_cache)
    return render_template("_overview_live.html", view=view)


@dashboard.get("/region/<name>")
def region(name: str) -> Any:
    ws = state()
    if name not in ws.settings.region_names:
        abort(404, description=f"No region named {name!r} in the configuration.")
    range_key = request.args.get("range", "1h")
    if range_key not in readmodel.RANGES:
        abort(400, description=f"range: {range_key!r} is not one of {', '.join(readmodel.RANGES)}")
    page = readmodel.region_page(ws.settings, ws.store, name, range_key, _now(), ws.series_cache)
    return render_template("region.html", page=page, ranges=list(readmodel.RANGES), **_controls_context(region=name))


@dashboard.get("/target/<name>")
def target(name: str) -> Any:
    ws = state()
    try:
        t = ws.settings.target(name)
    except KeyError:
        abort(404, description=f"No target named {name!r} in the configuration.")
    status = read_status(ws.settings, ws.store, _now())
    (view,) = readmodel.target_views(status, target=name)
    changes = ws.store.changes(target=name, limit=30)
    now = _now()
    day = ws.store.changes(target=name, since=now - timedelta(hours=24), status=ChangeStatus.APPLIED, limit=2000)
    share_history = traffic.history(view.routing, {r.region: r.actual for r in view.rows}, view.order, day, now)
    return render_template(
        "target.html",
        t=t,
        view=view,
        changes=changes,
        share_history=share_history,
        active=[o for o in status.overrides if o.target in (None, name)],
        **_controls_context(target=t),
    )


@dashboard.get("/timeline")
def timeline() -> Any:
    ws = state()
    region = request.args.get("region") or None
    target = request.args.get("target") or None
    kind = request.args.get("kind") or None
    if region is not None and region not in ws.settings.region_names:
        abort(400, description=f"region: {region!r} is not a configured region")
    if target is not None and target not in [t.name for t in ws.settings.targets]:
        abort(400, description=f"target: {target!r} is not a configured target")
    if kind is not None and kind not in readmodel.TIMELINE_KINDS:
        abort(400, description=f"kind: {kind!r} is not one of {', '.join(readmodel.TIMELINE_KINDS)}")
    items = readmodel.timeline(ws.store, region=region, target=target, kinds={kind} if kind else None, limit=200, now=_now())
    return render_template(
        "timeline.html",
        items=items,
        region=region,
        target=target,
        kind=kind,
        kinds=readmodel.TIMELINE_KINDS,
        regions=ws.settings.region_names,
        targets=[t.name for t in ws.settings.targets],
    )


@dashboard.get("/incidents")
def incidents() -> Any:
    ws = state()
    region = request.args.get("region") or None
    status = request.args.get("state") or None
    outcome = request.args.get("outcome") or None
    if region is not None and region not in ws.settings.region_names:
        abort(400, description=f"region: {region!r} is not a configured region")
    if status is not None and status not in ("open", "closed"):
        abort(400, description=f"state: {status!r} is not one of open, closed")
    if outcome is not None and not outcome.replace("_", "").isalpha():
        abort(400, description=f"outcome: {outcome[:40]!r} is not an outcome class")
    listing = readmodel.incident_list(ws.settings, ws.store, _now(), region=region, state=status, outcome=outcome, cache=ws.incident_cache)
    return render_template(
        "incidents.html",
        listing=listing,
        rows=listing.incidents[: readmodel.LIST_ROWS],
        region=region,
        state_filter=status,
        outcome=outcome,
        regions=ws.settings.region_names,
        now=_now(),
    )


@dashboard.get("/incident/<incident_id>")
def incident(incident_id: str) -> Any:
    ws = state()
    inc = readmodel.incident(ws.settings, ws.store, incident_id)
    if inc is None:
        abort(404, description=f"No incident {incident_id[:80]!r}: ids look like eastus-20261127T120000Z (region, start in UTC).")
    return render_template("incident.html", inc=inc, reasons=readmodel.plan_reasons(inc), now=_now())


# ---------------------------------------------------------------- actions


def _hidden_fields(req: actions.ActionRequest) -> dict[str, str]:
    fields = {"action": req.action.value, "reason": req.reason}
    for key in ("region", "target", "weight", "priority"):
        value = getattr(req, key)
        if value is not None:
            fields[key] = str(value)
    raw_expiry = request.form.get("expires_in", "").strip()
    if raw_expiry:
        fields["expires_in"] = raw_expiry
    return fields


def _back(req: actions.ActionRequest | None) -> str:
    if req is not None and req.region:
        return url_for("dashboard.region", name=req.region)
    if req is not None and req.target:
        return url_for("dashboard.target", name=req.target)
    return url_for("dashboard.overview")


def _render_preview(req: actions.ActionRequest, p: actions.Preview | None, status: int = 200, error: str | None = None) -> Any:
    return (
        render_template(
            "preview.html",
            req=req,
            p=p,
            label=ACTION_LABELS[req.action.value],
            fields=_hidden_fields(req),
            back=_back(req),
            error=error,
        ),
        status,
    )


def _parse() -> actions.ActionRequest:
    try:
        return actions.parse_request(request.form)
    except actions.InvalidAction as exc:
        abort(http_status(exc), description=str(exc))


def _quiet_preview(req: actions.ActionRequest) -> actions.Preview | None:
    """The preview to show again next to an error, if the request is valid enough to have one."""
    ws = state()
    try:
        return actions.preview(ws.settings, ws.store, req, actor(), _now())
    except (actions.InvalidAction, actions.NotAllowed):
        return None


@dashboard.post("/actions/preview")
@require_role("operator")
def action_preview() -> Any:
    ws = state()
    req = _parse()
    try:
        p = actions.preview(ws.settings, ws.store, req, actor(), _now())
    except actions.InvalidAction as exc:
        return _render_preview(req, None, http_status(exc), str(exc))
    except actions.NotAllowed as exc:
        abort(http_status(exc), description=str(exc))
    return _render_preview(req, p)


@dashboard.post("/actions/execute")
@require_role("operator")
def action_execute() -> Any:
    ws = state()
    req = _parse()
    try:
        result = actions.execute(
            ws.settings, ws.store, req, actor(), _now(), expected_digest=request.form.get("digest") or None, require_digest=True
        )
    except actions.InvalidAction as exc:
        return _render_preview(req, _quiet_preview(req), http_status(exc), str(exc))
    except actions.NotAllowed as exc:
        abort(http_status(exc), description=str(exc))
    except actions.ActionRefused as exc:
        shown_below = exc.preview is not None and not exc.preview.allowed  # the preview page shows the refusal itself
        return _render_preview(req, exc.preview, http_status(exc), None if shown_below else exc.reason)
    ids = ", ".join(f"#{o.id}" for o in result.added) or "none"
    lifted = ", ".join(f"#{o.id}" for o in result.lifted)
    msg = f"{ACTION_LABELS[req.action.value]} recorded (override {ids}{'; lifted ' + lifted if lifted else ''}). The worker applies it on its next tick."
    flash(msg, "ok")
    return redirect(_back(req))


@dashboard.post("/overrides/<int:override_id>/lift")
@require_role("operator")
def lift_override(override_id: int) -> Any:
    ws = state()
    try:
        done = actions.lift(ws.settings, ws.store, override_id, actor(), request.form.get("reason", ""), _now())
    except actions.InvalidAction as exc:
        flash(str(exc), "error")
    except actions.ActionRefused as exc:
        flash(exc.reason, "error")
    else:
        flash(f"Override #{done.id} ({done.kind.value}) lifted. Automation decides again on the worker's next tick.", "ok")
    return redirect(safe_next(request.form.get("back")))


# ---------------------------------------------------------------- drift (admin)


def _drift_request() -> tuple[str, str, str, str]:
    f = request.form
    action = f.get("action", "")
    if action not in ("adopt", "revert"):
        abort(400, description=f"action: {action[:20]!r} must be adopt or revert")
    target, region = f.get("target", ""), f.get("region", "")
    if target not in {t.name for t in state().settings.targets}:
        abort(400, description=f"target: {target[:80]!r} is not a configured target")
    return target, region, action, (f.get("reason") or "").strip()


@dashboard.post("/drift/preview")
@require_role("admin")
def drift_preview() -> Any:
    """What adopting or reverting this drift would do; nothing changes until confirmed."""
    from controlplane.drift import drift_preview as preview_sentence

    ws = state()
    target, region, action, reason = _drift_request()
    try:
        sentence = preview_sentence(ws.settings, ws.store, target, region, action, actor().name, _now())
    except (KeyError, ValueError) as exc:
        abort(400, description=str(exc).strip("'\""))
    fields = {"target": target, "region": region, "action": action, "reason": reason}
    back = url_for("dashboard.target", name=target)
    return render_template(
        "drift_preview.html", sentence=sentence, fields=fields, back=back, error=None if reason else "A reason is required."
    )


@dashboard.post("/drift/execute")
@require_role("admin")
def drift_execute() -> Any:
    from controlplane.drift import resolve_drift

    ws = state()
    target, region, action, reason = _drift_request()
    if len(reason) < 3:
        abort(400, description="reason: say why (at least 3 characters); it is kept in the audit trail")
    try:
        event = resolve_drift(ws.settings, ws.store, target, region, action, actor().name, _now(), why=reason)
    except (KeyError, ValueError) as exc:
        abort(400, description=str(exc).strip("'\""))
    flash(f"{event.summary}. The worker acts on it on its next tick.", "ok")
    return redirect(url_for("dashboard.target", name=target))


@dashboard.app_template_global()
def override_kind_label(kind: OverrideKind) -> str:
    return {"drain": "drained", "pin": "pinned", "freeze": "frozen", "maintenance": "maintenance", "failover": "failover"}[kind.value]
