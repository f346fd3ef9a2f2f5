"""An mlma project folder: ``mlma.toml`` (validated) and the store it points to.

``mlma init DIR`` writes a commented ``mlma.toml`` and creates the store (a SQLite file in the folder by
default, or a PostgreSQL database for a team); later commands act on the project in the current folder or on
``--project DIR``.

The configuration is validated as a whole when it is read: an unknown section or key, or a value of the wrong
type, is an error naming the file, the key and what was expected, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_NAME = "mlma.toml"

TEMPLATE = """\
# mlma project configuration. Every key is optional; an empty string means "infer from the data".

[data]
id_col = "unique_id"      # column naming the stream
time_col = "ds"           # timestamp column
target_col = "y"          # value column
freq = ""                 # pandas offset alias, e.g. "h", "D", "MS"; fixed by the first ingest, never changes
tick = ""                 # actuals that arrive together, e.g. "1D"; fixed with freq
drivers = []              # future drivers fed to the models, e.g. ["temperature", "campaign"] (docs/data.md)
historical_drivers = []   # drivers observed only up to the forecast origin (used lagged)
event_drivers = []        # future drivers that mark events, 0 when none runs (a campaign flag): the monitor
                          # discounts the level change the model attributes to them (docs/monitoring.md)
# The validation boundary of `mlma ingest` (docs/data.md): rows that break it are rejected and listed.
max_ahead_ticks = 7       # rows more than this many ticks after the project's newest data; 0: no limit
max_future = "1D"         # rows later than now (UTC) plus this; "off" for data dated in the future
value_range_factor = 100.0   # y further outside the stream's recent range than this many times its scale; 0: off
max_abs_value = 1e15      # |y| above this is refused for every stream (new ones too)

[store]
url = "{url}"
artifacts = "artifacts"   # model files, addressed by content hash (relative to this folder)
keep = ""                 # retention: after their ticks, `mlma run` and `mlma tick` delete data older than this
                          # before the last tick's end, e.g. "400D" (never what a tick reads); "": keep all

[registry]
keep_versions = 0         # artifact retention: after their ticks, `mlma run` and `mlma tick` delete the model files
                          # of each stream's versions older than its newest N, never of one in use; 0: keep all

[model]
spec = "{model}"         # seasonal-naive | ridge | lightgbm | sklearn:module.Class | statsforecast:AutoETS | mlforecast | package.module:Class
train_window_ticks = 0    # 0: default for the frequency (28 daily ticks for hourly data)
holidays = ""             # public-holiday calendar for the models' holiday feature, e.g. "DE" or "US-CA"

[agent]
executor = "process"      # inline | process[:N] | dask://host:8786
policy = "mlma"           # mlma | never | always | periodic:K
initial_ticks = 0         # ticks of history before the first scored tick; 0: all history at the first tick
fit_timeout_seconds = 3600   # a tick's re-trainings not back by then count as failed; 0: no limit
lock_ttl_seconds = 300    # a crashed agent's lock expires after this long
hold_no_data_share = 0.9  # hold a tick when this share of the served streams has no data (but the weekly rhythm)
wait_for_share = 0.9      # the newest tick waits while its actuals are fewer than this share of the tick before's...
max_wait = "2h"           # ...at most this long after its first actual past its end came in; "0": no wait

[monitor]                 # the MLMA policy (docs/monitoring.md)
alpha = 0.01              # false discovery rate across the streams tested in a tick
delta = 0.05              # relevance margin: smaller rises are not worth a re-training
fdr = "bh"                # bh | by | bonferroni | none
cooldown_ticks = 2
budget = 0                # a staggered refresh: a share of the fleet (< 1) or a number per tick; 0: tests only
max_age = 365             # age backstop: a model this many ticks old is re-trained and served at once; 0: off
loss = "absolute"         # absolute | squared | relative (errors / forecast level: for announced drivers on counts)
page_hinkley = 0          # opt-in Page-Hinkley trigger on the scaled losses' cumulative excess over their mean since the model serves (e.g. 200); 0: off
cusum_threshold = 0       # opt-in CUSUM trigger on the loss's cumulative excess over the reference (e.g. 24); 0: off
skill_margin = -1         # skill trigger: error significantly above (1 + this) x the seasonal naive's (e.g. 0.1); negative: off
growth = 2                # growth trigger: a model fitted on part of a capped training window is re-trained once the window holds this many times its rows; 0: off
common_shock = 0          # opt-in: when this share of the tested streams (and at least 5) trigger in one tick, they re-train only once their ticks after it confirm the change (e.g. 0.02); 0: off

[queue]                   # the engineer's queue (docs/api.md): the dashboard, the API and `mlma escalations`
group_by = "city"         # stream attribute whose value groups escalations of one kind and tick into one item; "": none

# Webhooks on new escalations (docs/alerts.md), one table per receiver:
# [[alerts.receivers]]
# name = "ops-slack"
# url_env = "MLMA_SLACK_WEBHOOK_URL"
# format = "slack"
# group_by = ["kind", "city"]
# repeat_interval = "4h"

# Mirror every model version and the champion alias into MLflow (docs/mlflow.md; pip install 'mlma[mlflow]'):
# [mlflow]
# tracking_uri = "sqlite:///mlflow.db"   # relative to this folder, or http://host:5000
# experiment = "mlma"
# model_prefix = "mlma."                 # one registered model per stream: <prefix><unique_id>
"""


@dataclass
class DataSection:
    id_col: str = "unique_id"
    time_col: str = "ds"
    target_col: str = "y"
    freq: str = ""
    tick: str = ""
    drivers: list = field(default_factory=list)
    historical_drivers: list = field(default_factory=list)
    event_drivers: list = field(default_factory=list)
    max_ahead_ticks: int = 7
    max_future: str = "1D"
    value_range_factor: float = 100.0
    max_abs_value: float = 1e15


@dataclass
class StoreSection:
    url: str = "sqlite:///mlma.db"
    artifacts: str = "artifacts"
    keep: str = ""


@dataclass
class RegistrySection:
    #: Artifact retention: the newest model versions per stream whose artifacts are kept (besides every version in
    #: use); 0: keep all.
    keep_versions: int = 0


@dataclass
class ModelSection:
    spec: str = "lightgbm"
    train_window_ticks: int = 0
    holidays: str = ""


@dataclass
class AgentSection:
    executor: str = "process"
    policy: str = "mlma"
    initial_ticks: int = 0
    fit_timeout_seconds: float = 3600.0
    lock_ttl_seconds: float = 300.0
    hold_no_data_share: float = 0.9
    wait_for_share: float = 0.9
    max_wait: str = "2h"


@dataclass
class MonitorSection:
    alpha: float = 0.01
    delta: float = 0.05
    fdr: str = "bh"
    cooldown_ticks: int = 2
    budget: float = 0.0
    max_age: int = 365
    loss: str = "absolute"
    page_hinkley: float = 0.0
    cusum_threshold: float = 0.0
    skill_margin: float = -1.0
    growth: float = 2.0
    common_shock: float = 0.0


@dataclass
class QueueSection:
    group_by: str = "city"

    def grouping(self) -> str | None:
        """The attribute that groups the queue's items; None: no grouping by attribute."""
        return self.group_by.strip() or None


@dataclass
class ProjectConfig:
    """The validated content of ``mlma.toml``; paths are resolved against the project folder."""

    root: Path
    data: DataSection = field(default_factory=DataSection)
    store: StoreSection = field(default_factory=StoreSection)
    registry: RegistrySection = field(default_factory=RegistrySection)
    model: ModelSection = field(default_factory=ModelSection)
    agent: AgentSection = field(default_factory=AgentSection)
    monitor: MonitorSection = field(default_factory=MonitorSection)
    queue: QueueSection = field(default_factory=QueueSection)
    #: Webhook receivers from ``[[alerts.receivers]]`` (see docs/alerts.md), parsed by :mod:`mlma.alerts`.
    alert_receivers: list = field(default_factory=list)
    alert_options: dict = field(default_factory=dict)
    #: ``[mlflow]``: the MLflow mirror of the registry (:class:`mlma.mlflow_sync.MlflowSettings`), or None.
    mlflow: Any = None

    @property
    def store_url(self) -> str:
        """The store URL, with a relative SQLite path taken relative to the project folder."""
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str((self.root / url[len(prefix):]).resolve())
        return url

    @property
    def artifacts_dir(self) -> Path:
        path = Path(self.store.artifacts)
        return path if path.is_absolute() else self.root / path

    @property
    def rejected_dir(self) -> Path:
        """Where `mlma ingest` lists the rows it rejected, one CSV per ingested file."""
        return self.root / "rejected"

    def ingest_limits(self):
        """The ``[data]`` validation boundary as :class:`mlma.data.IngestLimits`."""
        from mlma.data import IngestLimits

        d = self.data
        return IngestLimits(max_ahead_ticks=d.max_ahead_ticks,
                            max_future=None if d.max_future.strip().lower() == "off" else d.max_future,
                            value_range_factor=d.value_range_factor, max_abs_value=d.max_abs_value)

    def late_actuals_wait(self) -> pd.Timedelta:
        """``[agent] max_wait``: how long the newest tick waits for its late actuals (:meth:`mlma.live.LiveAgent.
        check_late_actuals`), a :class:`pandas.Timedelta` from 0 (no wait) to a week."""
        return parse_wait(self.agent.max_wait, "[agent] max_wait")

    def retention(self):
        """``[store] keep``, the data time to keep, as a positive :class:`pandas.Timedelta`; None: keep all."""
        return parse_keep(self.store.keep, "[store] keep")

    def version_retention(self) -> int | None:
        """``[registry] keep_versions``: the newest model versions per stream whose artifacts are kept; None: all."""
        return self.registry.keep_versions or None

    def drivers(self):
        """The declared exogenous drivers as :class:`mlma.models.Drivers`."""
        from mlma.models import Drivers

        return Drivers(future=self.data.drivers, historical=self.data.historical_drivers,
                       events=self.data.event_drivers)

    def model_params(self) -> dict[str, Any]:
        """Model options from ``[model]`` besides the spec (the holiday calendar)."""
        return {"holidays": self.model.holidays} if self.model.holidays else {}

    def policy_params(self) -> dict[str, Any]:
        """Keyword arguments for :class:`mlma.mlma_policy.MLMAPolicy`."""
        m = self.monitor
        return {"alpha": m.alpha, "delta": m.delta, "fdr": m.fdr, "cooldown_ticks": m.cooldown_ticks,
                "budget": m.budget or None, "max_age": m.max_age, "loss": m.loss,
                "page_hinkley": m.page_hinkley or None, "cusum_threshold": m.cusum_threshold or None,
                "skill_margin": m.skill_margin if m.skill_margin >= 0 else None,
                "growth": m.growth or None, "common_shock": m.common_shock or None}

    def build_policy(self):
        """The project's policy: ``[agent] policy`` with the ``[monitor]`` settings, for an MLMA policy.

        Settings written in the spec itself (``policy = "mlma:alpha=0.1"``) take precedence over ``[monitor]``.
        """
        from mlma.policy import make_policy

        return make_policy(self.agent.policy, **self.monitor_settings())

    def monitor_settings(self) -> dict[str, Any]:
        """The ``[monitor]`` settings the policy is built with: none for a baseline; for an MLMA policy those the
        spec does not set itself (``policy = "mlma:alpha=0.1"`` takes its alpha from the spec)."""
        from mlma.policy import PolicySpec, policy_kind

        spec = self.agent.policy
        if policy_kind(spec) != "mlma":
            return {}
        own = {key for key, _ in PolicySpec.parse(spec).params}
        return {key: value for key, value in self.policy_params().items() if key not in own}


_SECTIONS = {"data": DataSection, "store": StoreSection, "registry": RegistrySection, "model": ModelSection,
             "agent": AgentSection, "monitor": MonitorSection, "queue": QueueSection}


MAX_LOCK_TTL_SECONDS = 86_400
"""Longest ``[agent] lock_ttl_seconds``: a crashed agent's lock must expire within a day."""

#: The longest ``[agent] fit_timeout_seconds`` (and ``mlma backtest --fit-timeout``): 30 days. Far beyond it the
#: platform's timers overflow (``1e10`` failed every fit with "timestamp out of range for platform time_t"), and no
#: tick's re-trainings are meant to run for a month; 0 means no limit.
MAX_FIT_TIMEOUT_SECONDS = 30 * 86_400

#: The most ticks a count of the MLMA policy's may be (a window, a probation, an age: ``[monitor] max_age``,
#: ``mlma:window_ticks=...``): they are kept in 16-bit and 32-bit counters, and 1,000,000 for window_ticks
#: overflowed one mid-replay, after the work done so far.
MAX_POLICY_TICKS = 10_000

MAX_TRAIN_WINDOW_TICKS = 1_000_000
"""Longest ``[model] train_window_ticks`` (and ``mlma backtest --train-window``): a million ticks, all the history
of any project (2,700 years of daily ticks). A larger one meant nothing more and was written back in messages as
the tick to wait for (``9223372036854775807``)."""

MAX_KEEP_VERSIONS = 10_000
"""Largest ``[registry] keep_versions`` (and ``mlma prune --versions``): more is keeping all."""


class ConfigError(ValueError):
    """``mlma.toml`` is missing, unreadable or invalid; the message names the file and the key."""


def parse_keep(text: str, what: str = "keep"):
    """A retention span (``[store] keep``, ``mlma prune --keep``): a positive duration such as ``400D`` or
    ``13W`` as a :class:`pandas.Timedelta`; None for an empty text (keep everything).

    >>> parse_keep("400D"), parse_keep("")
    (Timedelta('400 days 00:00:00'), None)
    >>> parse_keep("13 weeks"), parse_keep("90d"), parse_keep("P400D")
    (Timedelta('91 days 00:00:00'), Timedelta('90 days 00:00:00'), Timedelta('400 days 00:00:00'))
    >>> parse_keep("400", "[store] keep")
    Traceback (most recent call last):
    ...
    ValueError: [store] keep must be a whole number of days or weeks such as 400D or 13W, at most 36,525 days (months and years have no fixed length), got '400'
    """
    import pandas as pd

    days = keep_days(text, what)
    return None if days is None else pd.Timedelta(days=days)


def parse_wait(text: Any, what: str = "max_wait"):
    """A waiting time (``[agent] max_wait``) such as ``2h``, ``90min`` or ``1D`` as a :class:`pandas.Timedelta`,
    from 0 (``"0"``: no wait) to a week.

    >>> parse_wait("2h"), parse_wait("0")
    (Timedelta('0 days 02:00:00'), Timedelta('0 days 00:00:00'))
    >>> parse_wait("2", "[agent] max_wait")
    Traceback (most recent call last):
    ...
    ValueError: [agent] max_wait must be a duration with its unit such as 2h, 90min or 1D, from 0 (no wait) to 7 days, got '2'
    """
    import pandas as pd

    problem = ValueError(f"{what} must be a duration with its unit such as 2h, 90min or 1D, from 0 (no wait) to 7 "
                         f"days, got {text!r}")
    value = text.strip() if isinstance(text, str) else ""
    if value == "0":
        return pd.Timedelta(0)
    # A bare number would be nanoseconds to pandas: a unit is required.
    if not re.search(r"[A-Za-z]", value):
        raise problem
    try:
        wait = pd.Timedelta(value)
    except (ValueError, TypeError):
        raise problem from None
    if pd.isna(wait) or not pd.Timedelta(0) <= wait <= pd.Timedelta(days=7):
        raise problem
    return wait


def keep_days(text: str, what: str = "keep") -> int | None:
    """:func:`parse_keep` in days, with the standard library alone (``mlma status`` loads no pandas).

    >>> keep_days("13W"), keep_days(" ")
    (91, None)
    """
    if not text.strip():
        return None
    # Days or weeks only: a bare "400" is 400 nanoseconds to pandas and "6m" six minutes (meant as months),
    # either of which would prune the store down to what the ticks read.
    match = _KEEP.match(text) or _KEEP_ISO.match(text)
    days = 0 if match is None else int(match["n"]) * (7 if match["unit"][0].lower() == "w" else 1)
    if not 1 <= days <= _KEEP_MOST_DAYS:
        raise ValueError(f"{what} must be a whole number of days or weeks such as 400D or 13W, at most "
                         f"{_KEEP_MOST_DAYS:,} days (months and years have no fixed length), got {text!r}")
    return days


_KEEP = re.compile(r"^\s*(?P<n>\d{1,9})\s*(?P<unit>d|days?|w|weeks?)\s*$", re.IGNORECASE)
_KEEP_ISO = re.compile(r"^\s*P(?P<n>\d{1,9})(?P<unit>[DW])\s*$", re.IGNORECASE)  # ISO 8601: P400D, P13W
#: A century: longer would overflow the data times it is subtracted from (pandas' range ends in 2262).
_KEEP_MOST_DAYS = 36_525


def load_config(root: str | Path, *, check_values: bool = True) -> ProjectConfig:
    """Read and validate ``<root>/mlma.toml``.

    ``check_values=False`` checks the file's structure (sections, keys, types) but not the values whose
    check needs the data stack (durations, drivers, policy, holiday calendar): for ``mlma status``, which
    reads only the store's address and must start quickly; every command that uses those values checks them.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "mlma.toml").write_text('[monitor]\\nalpha = 0.1\\n')
    >>> load_config(folder).monitor.alpha
    0.1
    >>> _ = (folder / "mlma.toml").write_text('[monitor]\\nalpah = 0.1\\n')
    >>> load_config(folder)
    Traceback (most recent call last):
    ...
    mlma.project.ConfigError: ...mlma.toml: unknown key 'alpah' in [monitor]; known: alpha, delta, fdr, cooldown_ticks, budget, max_age, loss, ..., growth, common_shock
    """
    root = Path(root)
    path = root / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"no {CONFIG_NAME} in {root.resolve()}: run `mlma init {root}` first, or pass --project")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except OSError as exc:  # a folder in its place, no permission to read it
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}"
                          + ("; it is a folder, not a file" if path.is_dir() else "") + ")") from None
    config = ProjectConfig(root=root.resolve())
    if "alerts" in raw:
        _load_alerts(config, raw.pop("alerts"), path)
    if "mlflow" in raw:
        from mlma.mlflow_sync import parse_settings  # noqa: PLC0415 - does not import MLflow itself

        try:
            config.mlflow = parse_settings(raw.pop("mlflow"), root=config.root, source=str(path))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for name, values in raw.items():
        if name not in _SECTIONS and not isinstance(values, dict):
            # A key before the first [section] header: say where it could go.
            homes = [section for section, kind in _SECTIONS.items() if name in {f.name for f in fields(kind)}]
            where = f"; it belongs under [{homes[0]}]" if homes else ""
            raise ConfigError(f"{path}: key {name!r} is outside any section{where}; sections: "
                              f"{', '.join(_SECTIONS)}, alerts, mlflow")
        if name not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{name}]; known: {', '.join(_SECTIONS)}, alerts, mlflow")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{name}] must be a table of keys")
        section = getattr(config, name)
        known = {f.name: f for f in fields(section)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r} in [{name}]; known: {', '.join(known)}")
            expected = type(getattr(section, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise ConfigError(f"{path}: [{name}] {key} must be {expected.__name__}, got {value!r}")
            setattr(section, key, value)
    _check_store_path(config, path)
    _check_columns(config, path)
    if check_values:
        _check_values(config, path)
    return config


def _check_store_path(config: ProjectConfig, path: Path) -> None:
    """A SQLite store in a folder whose path holds bytes that are not UTF-8 (a Latin-1 system's é) cannot be opened:
    SQLite takes UTF-8 paths. Said here, before any command, rather than as an encoding error of the driver."""
    from mlma.visible import storable

    url = config.store_url
    if storable(url) != url:
        raise ConfigError(f"{path}: the store {storable(url)} is in a folder whose path holds bytes that are not "
                          "UTF-8 (written \\xNN), which SQLite cannot open: rename the folder, or set [store] url "
                          "to a store elsewhere")


def _load_alerts(config: ProjectConfig, alerts: Any, path: Path) -> None:
    from mlma.alerts import AlertConfigError, check_url, parse_receivers

    if not isinstance(alerts, dict):
        raise ConfigError(f"{path}: [alerts] must be a table with [[alerts.receivers]] entries")
    unknown = set(alerts) - {"receivers", "external_url"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} in [alerts]; known: receivers, external_url")
    try:
        config.alert_receivers = parse_receivers(alerts.get("receivers"), source=str(path))
    except AlertConfigError as exc:
        raise ConfigError(str(exc)) from None
    url = alerts.get("external_url")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{path}: [alerts] external_url must be a string (the dashboard's address)")
    if url:
        try:  # here, not when the first tick builds its notifier (which stopped every tick, with a traceback)
            check_url(url, "[alerts] external_url")
        except AlertConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    config.alert_options = {"external_url": url} if url else {}


def _check_columns(config: ProjectConfig, path: Path) -> None:
    """The data files' key columns: three different names (checked by every command, `mlma status` too)."""
    columns = {"id_col": config.data.id_col, "time_col": config.data.time_col, "target_col": config.data.target_col}
    for key, name in columns.items():
        if not name.strip():
            raise ConfigError(f"{path}: [data] {key} must name a column of the data files, got {name!r}")
    for first, second in (("id_col", "time_col"), ("id_col", "target_col"), ("time_col", "target_col")):
        if columns[first] == columns[second]:  # the ingest said only that a renamed column would clash
            raise ConfigError(f"{path}: [data] {first} and {second} name the same column {columns[first]!r}; a "
                              "stream's id, its timestamps and its target are three columns")


def _check_values(config: ProjectConfig, path: Path) -> None:
    try:
        config.ingest_limits()
    except ValueError as exc:
        raise ConfigError(f"{path}: [data] {exc}") from None
    keep_versions = config.registry.keep_versions
    if not 0 <= keep_versions <= MAX_KEEP_VERSIONS:
        raise ConfigError(f"{path}: [registry] keep_versions (the newest model versions per stream whose artifacts "
                          f"are kept) must be a whole number from 1 to {MAX_KEEP_VERSIONS:,}, or 0 to keep all, got "
                          f"{keep_versions}")
    try:
        config.late_actuals_wait()
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    share = config.agent.wait_for_share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:  # NaN fails
        raise ConfigError(f"{path}: [agent] wait_for_share (the share of the tick before's actuals the newest tick "
                          f"waits for) must be a number in [0, 1] (0: no wait), got {share!r}")
    if not 0 < config.agent.hold_no_data_share <= 1:
        raise ConfigError(f"{path}: [agent] hold_no_data_share must be in (0, 1], got "
                          f"{config.agent.hold_no_data_share}")
    m = config.monitor
    if not 0 < m.alpha < 1:
        raise ConfigError(f"{path}: [monitor] alpha must be in (0, 1), got {m.alpha}")
    if not (m.delta >= 0 and math.isfinite(m.delta)):  # NaN fails both
        raise ConfigError(f"{path}: [monitor] delta must be a finite number >= 0, got {m.delta}")
    if m.fdr not in ("bh", "by", "bonferroni", "none"):
        raise ConfigError(f"{path}: [monitor] fdr must be bh, by, bonferroni or none, got {m.fdr!r}")
    for key in ("cooldown_ticks", "budget", "page_hinkley", "cusum_threshold"):
        if not getattr(m, key) >= 0 or not math.isfinite(getattr(m, key)):  # NaN fails both
            raise ConfigError(f"{path}: [monitor] {key} must be a finite number >= 0, got {getattr(m, key)}")
    from mlma.params import PARAMETERS, ParameterError

    try:  # the bound a person's override has: 3,000,000,000 wrapped in the policy's 32-bit counters (no cool-down)
        PARAMETERS["cooldown_ticks"].check(m.cooldown_ticks, "the project's default")
    except ParameterError as exc:
        raise ConfigError(f"{path}: [monitor] {exc}") from None
    if not math.isfinite(m.skill_margin):
        raise ConfigError(f"{path}: [monitor] skill_margin must be a finite number (negative: off), "
                          f"got {m.skill_margin}")
    if isinstance(m.growth, bool) or not isinstance(m.growth, (int, float)) or not (
            m.growth == 0 or (m.growth > 1 and math.isfinite(m.growth))):
        raise ConfigError(f"{path}: [monitor] growth (re-train a model fitted on a short history once the history "
                          f"is this many times larger) must be a number > 1, or 0 for off, got {m.growth!r}")
    if isinstance(m.common_shock, bool) or not isinstance(m.common_shock, (int, float)) or not (
            0 <= m.common_shock <= 1):  # NaN fails both
        raise ConfigError(f"{path}: [monitor] common_shock (the share of the tested streams that, triggering in one "
                          f"tick, have their triggers held until the ticks after it confirm them) must be in [0, 1] "
                          f"(0: off), got {m.common_shock!r}")
    if isinstance(m.max_age, bool) or not isinstance(m.max_age, int) or not 0 <= m.max_age <= MAX_POLICY_TICKS:
        raise ConfigError(f"{path}: [monitor] max_age (the age backstop, in ticks, 0: off) must be a whole number "
                          f"from 0 to {MAX_POLICY_TICKS:,}, got {m.max_age!r}")
    from mlma.policy import LOSSES

    if m.loss not in LOSSES:
        raise ConfigError(f"{path}: [monitor] loss must be {', '.join(LOSSES)}, got {m.loss!r}")
    if m.budget >= 1 and not float(m.budget).is_integer():
        raise ConfigError(f"{path}: [monitor] budget must be a share of the fleet below 1 or a whole number of "
                          f"re-trainings per tick, got {m.budget}")
    a = config.agent
    for key in ("initial_ticks", "fit_timeout_seconds"):
        if not (getattr(a, key) >= 0 and math.isfinite(getattr(a, key))):  # NaN fails both
            raise ConfigError(f"{path}: [agent] {key} must be a finite number >= 0, got {getattr(a, key)}")
    if a.fit_timeout_seconds > MAX_FIT_TIMEOUT_SECONDS:
        raise ConfigError(f"{path}: [agent] fit_timeout_seconds must be at most {MAX_FIT_TIMEOUT_SECONDS:,} (30 "
                          f"days; 0: no limit), got {a.fit_timeout_seconds:g}")
    if not 5 <= a.lock_ttl_seconds <= MAX_LOCK_TTL_SECONDS:  # NaN fails both
        raise ConfigError(f"{path}: [agent] lock_ttl_seconds must be between 5 and {MAX_LOCK_TTL_SECONDS:,} "
                          f"seconds, got {a.lock_ttl_seconds}")
    from mlma.executor_spec import check_executor_spec

    try:
        check_executor_spec(a.executor)
    except ValueError as exc:
        raise ConfigError(f"{path}: [agent] executor: {exc}") from None
    from mlma.policy import policy_kind

    try:
        kind = policy_kind(a.policy)
    except ValueError as exc:
        raise ConfigError(f"{path}: [agent] policy: {exc}") from None
    if kind in ("adwin", "page-hinkley"):
        raise ConfigError(f"{path}: [agent] policy {a.policy!r} is a backtest baseline; live operation runs "
                          "mlma, never, always or periodic:K")
    window = config.model.train_window_ticks
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= MAX_TRAIN_WINDOW_TICKS:
        raise ConfigError(f"{path}: [model] train_window_ticks must be a whole number of ticks from 0 (the "
                          f"frequency's default) to {MAX_TRAIN_WINDOW_TICKS:,}, got {window!r}")
    from mlma.model_names import BUILTIN_MODELS

    # A plain name must be a built-in (a typo fails here, not at the first tick); a spec with ":" (an import
    # path, a file, an extra) is left to the tick, whose environment may have what this command's has not.
    spec = config.model.spec.strip()
    if ":" not in spec and spec != "mlforecast" and spec.lower().replace("_", "-") not in BUILTIN_MODELS:
        raise ConfigError(f"{path}: [model] spec {spec!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}) "
                          "nor a spec with an import path (package.module:Class, sklearn:..., statsforecast:..., "
                          "mlforecast, pickle:FILE)")
    try:
        config.drivers().check_columns(config.data.id_col, config.data.time_col, config.data.target_col)
    except ValueError as exc:
        raise ConfigError(f"{path}: [data] drivers: {exc}") from None
    if config.model.holidays:
        from mlma.models.features import check_holiday_country

        try:
            check_holiday_country(config.model.holidays)
        except ValueError as exc:
            raise ConfigError(f"{path}: [model] {exc}") from None
    if not (config.store.url.startswith("sqlite:") or config.store.url.startswith("postgresql")):
        raise ConfigError(f"{path}: [store] url must be sqlite:///FILE or postgresql+psycopg://..., "
                          f"got {config.store.url!r}")
    try:
        config.retention()
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # An empty value would make the project folder itself the artifact store (`mlma gc` sweeping it): a
    # template variable left blank, not a choice.
    if not config.store.artifacts.strip() or config.artifacts_dir.resolve() == config.root.resolve():
        raise ConfigError(f"{path}: [store] artifacts must name a folder for the model files other than the "
                          f"project folder itself (relative to it, or absolute; the default is 'artifacts'), got "
                          f"{config.store.artifacts!r}; a project that kept its model files there: move its "
                          "two-letter folders into that folder")


def _project_in_store(url: str) -> str | None:
    """What of a project the store at ``url`` holds (``"4 streams, 12 ticks"``, or the schema of another mlma
    version), read without creating or migrating anything; None for a new or empty store."""
    from mlma.store import SchemaError, Store
    from mlma.store.engine import missing_sqlite_file

    if missing_sqlite_file(url) is not None:
        return None
    try:
        with Store.open(url) as store:
            return store.holds_a_project()
    except SchemaError as exc:
        return None if exc.current is None else f"an mlma schema at revision {exc.current}, of another mlma version"


def init_project(root: str | Path, *, db: str | None = None, model: str = "lightgbm",
                 attach: bool = False) -> ProjectConfig:
    """Create a project folder with ``mlma.toml`` and an up-to-date store; refuses to overwrite one, and a model
    spec that cannot be built (:func:`check_model_spec`), before writing anything.

    A store (``db``) that already holds a project's data (streams or ticks) is refused: a second folder on it
    would share and change that fleet, and its failures would reach that project's queue. ``attach=True``
    makes the folder another front of the same project (a second machine, docs/cluster.md): then give it the
    same ``[model]``, ``[data]`` and ``[monitor]`` settings and artifacts folder as the first.
    """
    from mlma.store import Store

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file; give a folder for the project")
    path = root / CONFIG_NAME
    if path.exists():
        raise ConfigError(f"{path} exists already; this folder is a project")
    check_model_spec(model)  # a wrong spec is refused now, before anything is written, not at the first tick
    # The highest folder this call creates (the project's, or a missing parent of it), removed on failure.
    created = next((folder for folder in reversed([root, *root.parents]) if not folder.exists()), None)
    # The project holds the fleet's data, models and possibly a database password: its owner's only.
    _private_dir(root)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(TEMPLATE.format(url=db or "sqlite:///mlma.db", model=model))
    artifacts = None
    try:
        config = load_config(root)
        artifacts = None if config.artifacts_dir.exists() else config.artifacts_dir
        _private_dir(config.artifacts_dir)
        # Looked at before Store.create, which would migrate another project's older schema under its agent.
        held = None if attach else _project_in_store(config.store_url)
        if not held:
            Store.create(config.store_url).close()
        if held:
            raise ConfigError(f"the store {config.store_url} already holds a project ({held}); a new project needs "
                              "a store of its own (another database, or another schema: "
                              "?options=-csearch_path%3DNAME), or pass --attach to make this folder another front "
                              "of that project (docs/cluster.md)")
    except Exception as exc:
        # Nothing half-made stays behind: a retry with a mended --db must not find "a project" here.
        path.unlink()
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif artifacts is not None:
            shutil.rmtree(artifacts, ignore_errors=True)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot create the project's store: {type(exc).__name__}: "
                          f"{(str(exc).strip().splitlines() or [''])[0]}") from None
    return config


#: The frequencies a project's data can have (mlma.calendar.Frequency's aliases), the clocks a model spec is
#: built for before the first ingest fixes one: hourly first, whose error is the one said when none builds.
_PROBE_FREQUENCIES = ("h", "D", "min", "5min", "15min", "30min", "W-SUN", "MS", "ME", "QS", "QE", "YS", "YE")


def _probe_clocks() -> list[tuple[str, int, int]]:
    """``(freq, season_length, horizon)`` of every clock a project could have: each frequency of
    ``_PROBE_FREQUENCIES`` with its season (the season rule), in its default tick (:meth:`Frequency.default_tick`:
    hourly data in daily ticks, horizon 24) and in a tick of one step (horizon 1, the fewest: a lag must be at
    least a tick long, for instance); a project's ``[data] tick`` may be either, or any multiple of a step.

    >>> _probe_clocks()[:3]
    [('h', 24, 24), ('h', 24, 1), ('D', 7, 7)]
    >>> sorted({freq for freq, _, _ in _probe_clocks()}) == sorted(_PROBE_FREQUENCIES)
    True
    """
    from mlma.calendar import Frequency

    clocks = []
    for alias in _PROBE_FREQUENCIES:
        frequency = Frequency(alias)
        for horizon in dict.fromkeys((frequency.steps_per(frequency.default_tick()), 1)):
            clocks.append((frequency.alias, frequency.season_length, horizon))
    return clocks


def check_model_spec(spec: str) -> str | None:
    """Build ``spec`` as the agent will (:func:`mlma.models.make_forecaster`, the same parser and factory),
    before a project is written: a ``ConfigError`` naming the spec and what is wrong with it when no clock
    could build it; None when it builds.

    The frequency is known only once the first ingest fixes it, so the spec is built for every clock a project
    could have (:func:`_probe_clocks`: minutes to years, each in its default tick and in a one-step tick) and
    refused only when it fails for every one of them (an unknown option, a malformed spec, a bad value); an
    error that depends on the clock (a model for weekly data only) is left to the first tick, which knows it.
    A spec that names what this environment cannot import or read (:class:`mlma.models.SpecUnavailable`: an
    optional extra, a package not on the path, a module whose code raises at import, say reading a config file
    or a variable this environment lacks, a model file or a file the constructor reads, an ``OSError``) is not
    refused either, as the environment that runs the ticks may have it: the reason is returned, for
    ``mlma init`` to say (the first tick names it too, if it is missing there as well).

    >>> check_model_spec("ridge:alpha=3") is None
    True
    >>> check_model_spec("ridge:alpha=-1")
    Traceback (most recent call last):
    ...
    mlma.project.ConfigError: model 'ridge:alpha=-1': alpha must be a non-negative number, got -1
    >>> check_model_spec("no_such_package_xyz:Model")[:72]
    "model spec 'no_such_package_xyz:Model': cannot import module 'no_such_pa"
    """
    from mlma.models import ForecastContext, SpecUnavailable, make_forecaster

    first = None
    for freq, season, horizon in _probe_clocks():
        try:
            make_forecaster(spec, ForecastContext(freq, season_length=season, horizon=horizon))
            return None
        except SpecUnavailable as exc:
            return str(exc)
        except ValueError as exc:
            first = first or exc
    text = str(first)
    said = f"model spec {spec.strip()!r}: "  # the factory's own prefix, not said twice
    raise ConfigError(f"model {spec!r}: {text[len(said):] if text.startswith(said) else text}")


def _private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by its owner only; an existing folder is left as is."""
    if path.exists():
        return
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; make it exact
