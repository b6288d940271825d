"""Configuration: one YAML file -> validated, frozen settings.

Every section validates itself and sets defaults (pydantic); cross-field
checks (unknown regions, colliding priorities, ranges that depend on the
target kind) run after. A bad file refuses to start: :class:`ConfigError`
carries one line per problem, each naming the path and the value, e.g.
``targets[0].endpoints.eastus2: no region named 'eastus2'``.

Secrets never live in the file: only the names of environment variables or
the credential kind.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from controlplane.domain import CONFIG_PROBLEM_OUTCOMES, Outcome
from controlplane.durations import Duration
from controlplane.errors import BadInput
from controlplane.logging_setup import LoggingSettings
from controlplane.notify.settings import NotificationSettings
from controlplane.oidc_settings import OidcSettings

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------- value types


def _not_bool(value: Any) -> Any:
    """YAML's ``true`` is not a number: pydantic would read it as 1."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


def _azure_name(kind: str, pattern: str, low: int, high: int, rule: str) -> AfterValidator:
    """A check of one of Azure's documented naming rules (length and characters)."""
    rx = re.compile(pattern)

    def check(value: str) -> str:
        if not low <= len(value) <= high or not rx.fullmatch(value):
            raise ValueError(f"not a valid {kind}: {low}-{high} characters, {rule}")
        return value

    return AfterValidator(check)


# From "Naming rules and restrictions for Azure resources" and the REST specs'
# path-parameter patterns. A name that breaks them could only be a typo or an
# attempt to reach another resource through the ARM path ("../../providers/...").
ResourceGroupName = Annotated[
    str,
    _azure_name(
        "resource group name",
        r"[-\w.()]*[-\w()]",
        1,
        90,
        "letters, digits, underscores, hyphens, periods and parentheses, not ending in a period",
    ),
]
SubscriptionId = Annotated[str, _azure_name("subscription id", r"[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}", 36, 36, "a GUID")]
TrafficManagerProfileName = Annotated[
    str,
    _azure_name(
        "Traffic Manager profile name",
        r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?",
        1,
        63,
        "letters, digits, hyphens and periods, starting and ending with a letter or digit",
    ),
]
TrafficManagerEndpointName = Annotated[
    str,
    _azure_name(
        "Traffic Manager endpoint name",
        r"[^<>*%&:\\?/+#\x00-\x1f\x7f]*[^<>*%&:\\?/+#\x00-\x1f\x7f. ]",
        1,
        260,
        "no < > * % & : \\ ? / + # or control characters, not ending in a period or space",
    ),
]
FrontDoorName = Annotated[
    str,
    _azure_name(
        "Front Door name",
        r"[A-Za-z0-9]+([-A-Za-z0-9]?[A-Za-z0-9])*",
        5,
        64,
        "letters, digits and hyphens, starting and ending with a letter or digit",
    ),
]
_ALNUM_HYPHEN = r"[A-Za-z0-9]+(-*[A-Za-z0-9])*"
_ALNUM_HYPHEN_RULE = "letters, digits and hyphens, starting and ending with a letter or digit"
BackendPoolName = Annotated[str, _azure_name("Front Door backend pool name", _ALNUM_HYPHEN, 1, 90, _ALNUM_HYPHEN_RULE)]
CdnProfileName = Annotated[str, _azure_name("Front Door profile name", _ALNUM_HYPHEN, 1, 260, _ALNUM_HYPHEN_RULE)]
OriginGroupName = Annotated[str, _azure_name("Front Door origin group name", _ALNUM_HYPHEN, 1, 50, _ALNUM_HYPHEN_RULE)]
OriginName = Annotated[str, _azure_name("Front Door origin name", _ALNUM_HYPHEN, 1, 50, _ALNUM_HYPHEN_RULE)]
HostName = Annotated[
    str,
    _azure_name(
        "host name",
        r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
        1,
        253,
        "DNS labels of letters, digits and hyphens separated by periods",
    ),
]
EnvName = Annotated[str, Field(pattern=ENV_NAME, description="name of an environment variable")]


def redact_url(url: Any) -> str:
    """A URL as it may be shown: no password, user name or query values."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{k.split('=', 1)[0]}=***" for k in parts.query.split("&") if k) if parts.query else ""
    out = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else netloc + parts.path
    return out + (f"?{query}" if query else "") + ("#***" if parts.fragment else "")


def _check_base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials: put the key in an environment variable (auth.env)")
    if parts.query or "?" in value:
        raise ValueError("must not carry a query string (the probe adds api-version; keys belong in auth.env)")
    if parts.fragment or "#" in value:
        raise ValueError("must not carry a fragment")
    return value


_DB_URL = re.compile(
    r"(?P<name>[\w+]+)://"
    r"(?:(?P<user>[^:/@]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:(?P<host>\[[^\]]*\]|[^/:?]*)(?::(?P<port>[^/?]*))?)?"
    r"(?:/(?P<database>[^?]*))?(?:\?(?P<query>.*))?",
    re.DOTALL,
)


def _check_database_url(value: str) -> str:
    """The URL grammar SQLAlchemy accepts (checked here: config must not import the store's libraries)."""
    m = _DB_URL.fullmatch(value.strip())
    if m is None:
        raise ValueError("cannot be parsed as a database URL (e.g. sqlite:///regionguard.db, postgresql://user@host/db)")
    port = m.group("port")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"cannot be parsed as a database URL: port {port!r} is not a number from 1 to 65535")
    backend = m.group("name").split("+", 1)[0]
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"backend {backend!r} is not supported: use sqlite:///path or postgresql://user@host/db")
    return value


# ---------------------------------------------------------------- regions


class ApiKeyAuth(_Section):
    kind: Literal["api_key"]
    env: str = Field(pattern=ENV_NAME, description="environment variable holding the key")


class EntraIdAuth(_Section):
    kind: Literal["entra_id"]
    scope: str = "https://cognitiveservices.azure.com/.default"


Auth = Annotated[ApiKeyAuth | EntraIdAuth, Field(discriminator="kind")]


class Pricing(_Section):
    input_per_1m: Float = Field(default=0.0, ge=0, le=1e6)
    output_per_1m: Float = Field(default=0.0, ge=0, le=1e6)


class LLMEndpoint(_Section):
    name: str = Field(pattern=_NAME)
    base_url: Annotated[str, AfterValidator(_check_base_url)] = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    deployment: str = Field(min_length=1)
    api_style: Literal["deployments", "v1"] = "deployments"
    api_version: str = "2024-10-21"
    model: str | None = None  # v1 style: model in the body; default = deployment
    auth: Auth
    token_param: Literal["max_tokens", "max_completion_tokens"] | None = None  # None = probe default
    pricing: Pricing = Pricing()


class Region(_Section):
    name: str = Field(pattern=_NAME)
    azure_region: str = Field(min_length=1)
    endpoints: list[LLMEndpoint] = Field(min_length=1)


# ---------------------------------------------------------------- probe / health


class ProbeSettings(_Section):
    vantage: str = Field(default="local", pattern=_NAME)
    interval: Duration = 15.0
    fast_interval: Duration = 5.0
    confirm_gap: Duration = Field(
        default=1.0, description="gap between confirmation probes while the evidence is undecided (at most fast_interval)"
    )
    liveness_interval: Duration = Field(default=5.0, description="zero-token liveness check (models list) interval; 0 = off")
    liveness_timeout: Duration = 3.0
    timeout: Duration = 10.0
    jitter: Float = Field(default=0.1, ge=0, le=0.5, description="fraction of the interval")
    concurrency: Int = Field(default=32, ge=1, le=1000)
    prompt_style: Literal["number"] = "number"
    max_tokens: Int = Field(default=5, ge=1, le=100)
    cost_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code the endpoints' pricing is in")
    token_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    slow_ttft: Duration = 3.0
    slow_total: Duration = 8.0
    counts_against_health: tuple[Outcome, ...] = (
        Outcome.SLOW,
        Outcome.THROTTLED,
        Outcome.SERVER_ERROR,
        Outcome.TIMEOUT,
        Outcome.CONNECT_ERROR,
        Outcome.TRUNCATED,
        Outcome.BAD_CONTENT,
    )
    config_problems: tuple[Outcome, ...] = tuple(sorted(CONFIG_PROBLEM_OUTCOMES))

    @model_validator(mode="after")
    def _check(self) -> ProbeSettings:
        if self.fast_interval > self.interval:
            raise ValueError(f"fast_interval {self.fast_interval}s is longer than interval {self.interval}s")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.confirm_gap <= 0:
            raise ValueError("confirm_gap must be positive")
        if self.liveness_interval and self.liveness_timeout <= 0:
            raise ValueError("liveness_timeout must be positive")
        return self


class HealthSettings(_Section):
    """How health is decided; docs/adr/0011-decide-on-evidence.md has the statistics."""

    window: Int = Field(default=20, ge=2, le=1000, description="results kept per endpoint and vantage (score, ratios)")
    failures_to_down: Int = Field(default=5, ge=1, le=100, description="consecutive hard failures (not 429s) that mean down")
    failure_ratio_down: Float = Field(default=0.6, gt=0, le=1, description="hard-failure share of a full window that means down")
    noise_rate: Float = Field(default=0.03, gt=0, lt=1, description="failure rate a healthy endpoint shows (random loss)")
    fault_rate: Float = Field(default=0.3, gt=0, lt=1, description="smallest failure rate worth acting on")
    decision_odds: Float = Field(default=1e6, gt=1, description="likelihood ratio (fault vs noise) a verdict needs")
    throttled_to_down: Int = Field(default=40, ge=1, le=10000, description="consecutive 429s that mean it serves nothing")
    degraded_ratio: Float | None = Field(default=None, gt=0, le=1, description="deprecated: the sequential test decides")
    successes_to_up: Int = Field(default=3, ge=1, le=100)
    min_dwell: Duration = 60.0
    flap_half_life: Duration = Field(default=600.0, gt=0, description="flap penalty halves in this time")
    flap_hold: Float = Field(default=1.4, gt=0, description="penalty (1 per down flap) at which an endpoint is held out")
    flap_reuse: Float = Field(default=0.75, gt=0, description="penalty under which a held endpoint may come back")
    flap_stable: Duration = Field(default=300.0, ge=0, description="stable time a held endpoint needs before it comes back")
    flap_max_hold: Duration = Field(default=1800.0, gt=0, description="longest a stable endpoint is held out")
    vantage_quorum: Int = Field(default=1, ge=1, le=100)
    suspect_vantage_ratio: Float = Field(
        default=1.0, gt=0, le=1, description="share of endpoints failing at once that makes a vantage suspect"
    )
    stale_after: Duration | None = None  # default: 2 probe intervals
    near_quota_headroom: Float = Field(default=0.1, ge=0, le=1)


# ---------------------------------------------------------------- targets


class TMEndpoint(_Section):
    name: TrafficManagerEndpointName
    type: Literal["AzureEndpoints", "ExternalEndpoints", "NestedEndpoints"] = "ExternalEndpoints"
    weight: Int = 100
    priority: Int | None = None


class FDBackend(_Section):
    address: HostName
    weight: Int = 50
    priority: Int = 1


class AFDOrigin(_Section):
    origin: OriginName
    weight: Int = 500
    priority: Int = 1


class APIMMember(_Section):
    """One member of an APIM load-balanced pool: the backend entity's id in the
    service and its baseline weight (regionguard's 1-1000 scale, written to APIM
    as weight / 10) and priority (APIM's own 0-100, lower first; None: left as APIM has it)."""

    backend: str = Field(min_length=1, max_length=80)
    weight: Int = 500
    priority: Int | None = None

    @field_validator("backend")
    @classmethod
    def _backend_id(cls, value: str) -> str:
        return _apim_backend_id(value)


class _Target(_Section):
    name: str = Field(pattern=_NAME)
    subscription_id: SubscriptionId
    resource_group: ResourceGroupName
    routing: Literal["weighted", "priority"] = "weighted"
    drift: Literal["report", "revert", "adopt"] = "report"
    failback: Literal["auto", "manual"] = "auto"
    failback_dwell: Duration = 300.0
    min_serving: Int | None = Field(default=None, ge=1)  # default: guardrails.min_serving


class TrafficManagerTarget(_Target):
    kind: Literal["traffic_manager"]
    profile: TrafficManagerProfileName
    endpoints: dict[str, TMEndpoint] = Field(min_length=1)


class FrontDoorTarget(_Target):
    kind: Literal["front_door"]
    front_door: FrontDoorName
    backend_pool: BackendPoolName
    endpoints: dict[str, FDBackend] = Field(min_length=1)


class FrontDoorCdnTarget(_Target):
    kind: Literal["front_door_cdn"]
    profile: CdnProfileName
    origin_group: OriginGroupName
    endpoints: dict[str, AFDOrigin] = Field(min_length=1)


# Azure naming rules (ARM and Microsoft.ApiManagement 2024-05-01 path parameters)
_SUBSCRIPTION_ID = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
_RESOURCE_GROUP = r"^[-\w._()]{0,89}[-\w_()]$"  # 1-90: letters, digits, - _ . ( ); not ending in '.'
_APIM_SERVICE = r"^[a-zA-Z](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$"  # ServiceNameParameter, 1-50
_APIM_BACKEND_ID_FORBIDDEN = "/?#%&\\"  # BackendIdParameter is 1-80 characters, one path segment


def _apim_backend_id(value: str) -> str:
    bad = sorted({c for c in value if c in _APIM_BACKEND_ID_FORBIDDEN or c.isspace()})
    if bad:
        shown = " ".join("space" if c.isspace() else c for c in bad)
        raise ValueError(f"an APIM backend id is one segment of an ARM path: it cannot contain {shown}")
    return value


class APIMBackendPoolTarget(_Target):
    """An Azure API Management load-balanced pool (a backend of ``type: Pool``)."""

    kind: Literal["apim_backend_pool"]
    subscription_id: str = Field(pattern=_SUBSCRIPTION_ID)
    resource_group: str = Field(pattern=_RESOURCE_GROUP)
    service: str = Field(min_length=1, max_length=50, pattern=_APIM_SERVICE)
    pool: str = Field(min_length=1, max_length=80)
    endpoints: dict[str, APIMMember] = Field(min_length=1)

    @field_validator("pool")
    @classmethod
    def _pool_id(cls, value: str) -> str:
        return _apim_backend_id(value)


# A configured target: one of the kinds above, chosen by its ``kind`` key. Every
# function that takes "a target" takes this union and narrows with isinstance.
Target = Annotated[TrafficManagerTarget | FrontDoorTarget | FrontDoorCdnTarget | APIMBackendPoolTarget, Field(discriminator="kind")]
TargetEndpoint = TMEndpoint | FDBackend | AFDOrigin | APIMMember  # one region's endpoint of a target
TARGET_KINDS = ("traffic_manager", "front_door", "front_door_cdn", "apim_backend_pool")

# Ranges per kind in regionguard's units: (weight min, weight max), (priority min, priority max).
# Weights share one 1-1000 scale for every kind (so pins, ramps and baselines mean the
# same everywhere); APIM's pool weights are 0-100 and carry weight / APIM_WEIGHT_SCALE,
# so an APIM weight is a multiple of APIM_WEIGHT_SCALE (docs/adr/0008). Priorities are
# ordinal and map one to one (APIM's own 0-100).
APIM_WEIGHT_SCALE = 10
WEIGHT_RANGE = {"traffic_manager": (1, 1000), "front_door": (1, 1000), "front_door_cdn": (1, 1000), "apim_backend_pool": (10, 1000)}
PRIORITY_RANGE = {"traffic_manager": (1, 1000), "front_door": (1, 5), "front_door_cdn": (1, 5), "apim_backend_pool": (0, 100)}
WEIGHT_QUANTUM = {"apim_backend_pool": APIM_WEIGHT_SCALE}  # other kinds: 1


def clamp_weight(kind: str, weight: float) -> int:
    """A weight the target kind can hold: rounded to its quantum, clamped into its range."""
    quantum = WEIGHT_QUANTUM.get(kind, 1)
    lo, hi = WEIGHT_RANGE[kind]
    return max(lo, min(hi, round(weight / quantum) * quantum))


def endpoint_of(target: Target, region: str) -> TargetEndpoint:
    """The configured endpoint of ``target`` for ``region`` (KeyError when it has none)."""
    return target.endpoints[region]


def azure_name(target: Target, region: str) -> str:
    """The name Azure knows a target's endpoint for ``region`` by."""
    ep = endpoint_of(target, region)
    if isinstance(ep, TMEndpoint):
        return ep.name
    if isinstance(ep, FDBackend):
        return ep.address
    if isinstance(ep, APIMMember):
        return ep.backend
    return ep.origin


# ---------------------------------------------------------------- the rest


class Guardrails(_Section):
    min_serving: Int = Field(default=1, ge=1, le=1000)
    max_drain_fraction: Float = Field(default=0.5, ge=0, le=1)
    max_weight_step: Int = Field(default=250, ge=1, le=1000)
    cooldown: Duration = 60.0
    write_budget_per_hour: Int = Field(default=120, ge=1, le=100_000)
    fail_open: bool = True


class Database(_Section):
    url: Annotated[str, AfterValidator(_check_database_url)] = "sqlite:///regionguard.db"


class Web(_Section):
    host: str = "127.0.0.1"
    port: Int = Field(default=8080, ge=0, le=65535)
    secret_key_env: EnvName = "REGIONGUARD_SECRET_KEY"
    session_lifetime: Duration = 12 * 3600.0
    login_attempts_per_minute: Int = Field(default=10, ge=1, le=10_000)
    # Behind a TLS-terminating proxy (opt-in): how many proxies in front of the
    # dashboard to trust for X-Forwarded-Proto/-For, so HSTS and Secure cookies
    # follow the browser's https. 0: trust none (a client could claim https).
    trusted_proxies: Int = Field(default=0, ge=0, le=5)
    # An account is locked for lockout_for after lockout_after failed sign-ins
    # within lockout_for, counted in the database: every web process sees them.
    lockout_after: Int = Field(default=5, ge=1, le=1000)
    lockout_for: Duration = 900.0
    # Local (break-glass) users: false turns the password form off; needs ``oidc``.
    local_users: bool = True
    oidc: OidcSettings | None = None

    @model_validator(mode="after")
    def _someone_can_sign_in(self) -> Web:
        if not self.local_users and self.oidc is None:
            raise ValueError("local_users: false needs an oidc section (nobody could sign in to the dashboard)")
        return self


class Azure(_Section):
    cloud: Literal["public", "china", "usgov"] = "public"
    arm_base_url: str | None = Field(default=None, pattern=r"^https://")
    credential: Literal["default", "static_token"] = "default"
    ca_bundle: str | None = None
    polling_interval: Duration | None = None
    dry_run: bool = False
    request_timeout: Duration = 30.0


ARM_BASE_URLS = {
    "public": "https://management.azure.com",
    "china": "https://management.chinacloudapi.cn",
    "usgov": "https://management.usgovcloudapi.net",
}


class Reconcile(_Section):
    interval: Duration = 10.0
    deadline: Duration = 30.0  # a tick's Azure writes stop being retried after this


class Retention(_Section):
    raw_days: Float = Field(default=7, gt=0, le=3650)
    rollup_days: Float = Field(default=90, gt=0, le=3650)
    interval: Duration = Field(
        default=3600.0, gt=0, description="how often the retention pass runs (the first one 5 minutes after start, or sooner)"
    )


class Settings(_Section):
    regions: list[Region] = Field(min_length=1)
    probe: ProbeSettings = ProbeSettings()
    health: HealthSettings = HealthSettings()
    targets: list[Target] = Field(default_factory=list)
    guardrails: Guardrails = Guardrails()
    database: Database = Database()
    web: Web = Web()
    azure: Azure = Azure()
    reconcile: Reconcile = Reconcile()
    retention: Retention = Retention()
    notifications: NotificationSettings = NotificationSettings()
    logging: LoggingSettings = LoggingSettings()

    # -- helpers used everywhere
    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]

    @property
    def arm_base_url(self) -> str:
        return self.azure.arm_base_url or ARM_BASE_URLS[self.azure.cloud]

    def min_serving(self, target: Target) -> int:
        return target.min_serving or self.guardrails.min_serving


class ConfigError(BadInput):
    """A configuration that must not start. ``problems`` has one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


_TAGS = frozenset({*TARGET_KINDS, "api_key", "entra_id", "generic"})


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "function-after" or (part in _TAGS and i + 1 < len(loc)):
            continue  # discriminator / validator tags pydantic adds (a field may share a tag's name: front_door)
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_pydantic(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = _path(tuple(e["loc"]))
        kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
        if loc.endswith("url") and isinstance(value, str):
            value = redact_url(value)  # a URL may carry a password or a key: never echo it
        if kind == "missing":
            problems.append(f"{loc}: required")
        elif kind == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            tag = ctx.get("discriminator", "kind").strip("'")
            problems.append(f"{loc}.{tag}: {_short(ctx.get('tag'))} is not one of {ctx.get('expected_tags')}")
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            problems.append(f"{loc}: {_short(value)} is out of range ({e['msg'].removeprefix('Input should be ')})")
        else:
            problems.append(f"{loc}: {_short(value)} rejected: {e['msg'].removeprefix('Value error, ')}")
    return problems


def semantic_problems(s: Settings) -> list[str]:
    """Cross-field checks pydantic cannot express on one field."""
    problems: list[str] = []
    regions = s.region_names
    for name, n in Counter(regions).items():
        if n > 1:
            problems.append(f"regions: duplicate region name {name!r}")
    by_fold: dict[str, list[str]] = {}
    for name in dict.fromkeys(regions):
        by_fold.setdefault(name.casefold(), []).append(name)
    for names in by_fold.values():
        if len(names) > 1:  # Azure compares names case-insensitively: these would be one region there
            problems.append(f"regions: names {', '.join(repr(n) for n in names)} differ only in case")
    for i, r in enumerate(s.regions):
        for name, n in Counter(e.name for e in r.endpoints).items():
            if n > 1:
                problems.append(f"regions[{i}].endpoints: duplicate endpoint name {name!r}")
    for name, n in Counter(t.name for t in s.targets).items():
        if n > 1:
            problems.append(f"targets: duplicate target name {name!r}")
    for i, t in enumerate(s.targets):
        where = f"targets[{i}]"
        wmin, wmax = WEIGHT_RANGE[t.kind]
        pmin, pmax = PRIORITY_RANGE[t.kind]
        for region, ep in t.endpoints.items():
            if region not in regions:
                problems.append(f"{where}.endpoints.{region}: no region named {region!r}")
            if not wmin <= ep.weight <= wmax:
                problems.append(f"{where}.endpoints.{region}.weight: {ep.weight} is not between {wmin} and {wmax}")
            elif ep.weight % WEIGHT_QUANTUM.get(t.kind, 1):
                q = WEIGHT_QUANTUM[t.kind]
                problems.append(
                    f"{where}.endpoints.{region}.weight: {ep.weight} is not a multiple of {q} "
                    f"(APIM pool weights are 0-100 and get regionguard's weight / {q})"
                )
            if ep.priority is not None and not pmin <= ep.priority <= pmax:
                problems.append(f"{where}.endpoints.{region}.priority: {ep.priority} is not between {pmin} and {pmax}")
        if t.routing == "priority":
            missing = [region for region, ep in t.endpoints.items() if ep.priority is None]
            for region in missing:
                problems.append(f"{where}.endpoints.{region}.priority: required when routing is 'priority'")
        priorities = Counter(ep.priority for ep in t.endpoints.values() if ep.priority is not None)
        # Traffic Manager requires unique priorities in a profile; for a priority
        # Front Door pool, equal priorities would mean "share traffic", which is
        # not active/passive either.
        if t.kind == "traffic_manager" or t.routing == "priority":
            for prio, n in priorities.items():
                if n > 1:
                    who = sorted(r for r, ep in t.endpoints.items() if ep.priority == prio)
                    problems.append(f"{where}.endpoints: priority {prio} is used by {', '.join(who)}; priorities must be unique")
        if isinstance(t, APIMBackendPoolTarget):
            for member_region, member in t.endpoints.items():
                if member.backend.lower() == t.pool.lower():
                    problems.append(
                        f"{where}.endpoints.{member_region}.backend: {member.backend!r} is the pool itself; a member is another backend"
                    )
        azure_names = Counter(azure_name(t, r).lower() if t.kind == "apim_backend_pool" else azure_name(t, r) for r in t.endpoints)
        for name, n in azure_names.items():
            if n > 1:
                problems.append(f"{where}.endpoints: Azure name {name!r} is mapped from more than one region")
        min_serving = s.min_serving(t)
        if min_serving > len(t.endpoints):
            problems.append(f"{where}.min_serving: {min_serving} is more than the {len(t.endpoints)} endpoint(s) of the target")
    if s.health.vantage_quorum > 1 and s.health.vantage_quorum > 100:
        problems.append(f"health.vantage_quorum: {s.health.vantage_quorum} is too large")
    if s.probe.timeout > s.probe.interval:
        problems.append(f"probe.timeout: {s.probe.timeout}s is longer than probe.interval {s.probe.interval}s")
    if s.health.failures_to_down > s.health.window:
        problems.append(f"health.failures_to_down: {s.health.failures_to_down} is larger than health.window {s.health.window}")
    if s.health.noise_rate >= s.health.fault_rate:
        problems.append(f"health.noise_rate: {s.health.noise_rate} must be below health.fault_rate {s.health.fault_rate}")
    if s.health.flap_reuse >= s.health.flap_hold:
        problems.append(f"health.flap_reuse: {s.health.flap_reuse} must be below health.flap_hold {s.health.flap_hold}")
    return problems


def parse_settings(data: Any, source: str = "<config>") -> Settings:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, _format_pydantic(err)) from None
    problems = semantic_problems(settings)
    if problems:
        raise ConfigError(source, problems)
    return settings


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read, parse and validate a YAML config file; raise ConfigError if bad."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [f"(file): cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(p), [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_settings(data, str(p))


def missing_api_keys(s: Settings, environ: Any = None) -> list[str]:
    """One line per API-key environment variable the config names that is unset or empty."""
    env = os.environ if environ is None else environ
    out = []
    for i, region in enumerate(s.regions):
        for j, ep in enumerate(region.endpoints):
            if isinstance(ep.auth, ApiKeyAuth) and not env.get(ep.auth.env):
                out.append(f"regions[{i}].endpoints[{j}].auth.env: {ep.auth.env} is not set (the API key of {region.name}/{ep.name})")
    return out


def summary(s: Settings) -> str:
    endpoints = sum(len(r.endpoints) for r in s.regions)
    kinds = Counter(t.kind for t in s.targets)
    tk = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no targets"
    return f"ok: {len(s.regions)} region(s), {endpoints} LLM endpoint(s), {len(s.targets)} target(s) ({tk}), database {s.database.url.split('://')[0]}"
