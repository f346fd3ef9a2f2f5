"""MLflow mirror of mlma's model registry (``pip install 'mlma[mlflow]'``; docs/mlflow.md).

mlma's registry stays the one that decides what serves. :class:`MlflowSync` follows it into an MLflow
tracking store (a local SQLite file or any tracking server):

- every version mlma records becomes an MLflow **run** in the project's experiment (parameters: spec,
  training window; metrics: fit seconds, rows learnt from, the challenger check's ratio; the pickled model as
  the run's ``model/model.pkl`` artifact) and a **model version** of the stream's registered model
  ``<model_prefix><unique_id>``, tagged ``mlma.unique_id`` and ``mlma.version``;
- the registered model's ``champion`` alias follows every promotion and roll-back in mlma.

A version whose artifact mlma's version retention pruned (``[registry] keep_versions``, ``mlma prune
--versions``) before it was delivered (MLflow was down meanwhile) is delivered all the same, without its model:
its run and model version, with the tag ``mlma.artifact_pruned`` (when it was pruned) and, instead of
``model/model.pkl``, a short note ``model/ARTIFACT_PRUNED.txt`` saying so (:func:`pruned_note`).

It is a :class:`~mlma.registry.RegistryListener`: :meth:`mlma.registry.ModelRegistry.publish` offers it what
it has not seen, and what it has seen is read back from MLflow itself (the tags above), so the registry's
tables are the outbox: a failed delivery (MLflow down, a full disk) is logged, never raised, and offered again
at the next publish. Nothing is delivered twice, since a version is marked as seen only once MLflow holds it,
and MLflow is asked (by the version's tags) before a version is logged. A champion's version deleted in MLflow
is logged again when the alias needs it.

:func:`import_model` copies a model registered in MLflow into a project folder so that a project can start
from it (``mlma init --from-mlflow``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlma.registry import (
    ArtifactCorrupted,
    ArtifactStore,
    ChampionChange,
    DeliveryRefused,
    ModelRegistry,
    ModelVersion,
    PublishReport,
    RegistryListener,
)

__all__ = ["BROKEN_NOTE", "MlflowSettings", "MlflowSync", "PRUNED_NOTE", "broken_note", "parse_settings",
           "project_sync", "pruned_note",
           "registered_name", "import_model", "project_stem", "free_project_stem", "settings_toml"]

log = logging.getLogger("mlma.mlflow")

_INSTALL = "pip install 'mlma[mlflow]'"
_KEYS = ("tracking_uri", "experiment", "model_prefix", "alias", "max_seconds")
#: Where MLflow keeps its tracking store: a server, a file store, or a database (MLflow's SQLAlchemy stores,
#: also with a driver: ``postgresql+psycopg2://``).
_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


@dataclass(frozen=True)
class MlflowSettings:
    """The ``[mlflow]`` section of ``mlma.toml``.

    Attributes
    ----------
    tracking_uri
        Where MLflow keeps runs and registered models: ``sqlite:///mlflow.db`` (relative paths are taken from
        the project folder) or a tracking server's ``http(s)://`` address.
    experiment
        The MLflow experiment holding one run per mlma version.
    model_prefix
        Each stream's registered model is ``<model_prefix><unique_id>``.
    alias
        The alias that follows mlma's champion.
    max_seconds
        Longest time one publish may take after a tick; the rest waits for the next tick.
    """

    tracking_uri: str
    experiment: str = "mlma"
    model_prefix: str = "mlma."
    alias: str = "champion"
    max_seconds: float = 60.0


def parse_settings(raw: Any, *, root: Path, source: str = "mlma.toml") -> MlflowSettings:
    """Validate an ``[mlflow]`` table; errors name ``source`` and the key.

    Examples
    --------
    >>> parse_settings({"tracking_uri": "sqlite:///mlflow.db"}, root=Path("/p")).tracking_uri
    'sqlite:////p/mlflow.db'
    >>> parse_settings({"tracking_uri": "sqlite:///m.db", "alias": ""}, root=Path("/p"))
    Traceback (most recent call last):
    ...
    ValueError: mlma.toml: [mlflow] alias must be a non-empty string, got ''
    >>> parse_settings({"tracking_uri": "sqlite:///m.db", "alias": "latest"}, root=Path("/p"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: mlma.toml: [mlflow] alias must be letters, digits, '_' or '-', and neither 'latest' nor ...
    >>> parse_settings({"tracking_uri": "htp://typo:5000"}, root=Path("/p"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: mlma.toml: [mlflow] tracking_uri must be a URI such as ... got 'htp://typo:5000'
    >>> parse_settings({"tracking_uri": "sqlite:///m.db", "experiment": "e" * 501}, root=Path("/p"))
    Traceback (most recent call last):
    ...
    ValueError: mlma.toml: [mlflow] experiment may have at most 500 characters (MLflow's limit), got 501
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: [mlflow] must be a table of keys ({', '.join(_KEYS)})")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} in [mlflow]; known: {', '.join(_KEYS)}")
    if "tracking_uri" not in raw:
        raise ValueError(f"{source}: [mlflow] needs tracking_uri, e.g. \"sqlite:///mlflow.db\"")
    values = dict(raw)
    for key in ("tracking_uri", "experiment", "model_prefix", "alias"):
        if key in values and (not isinstance(values[key], str) or not values[key].strip()):
            raise ValueError(f"{source}: [mlflow] {key} must be a non-empty string, got {values[key]!r}")
    if any(c in values.get("model_prefix", "") for c in "/:'%"):
        raise ValueError(f"{source}: [mlflow] model_prefix cannot contain '/', ':' (MLflow refuses them in model "
                         "names), a quote or '%'")
    alias = values.get("alias", "champion").strip()
    # MLflow's own rules, checked when the alias is first set (after the versions were logged): said here.
    if not re.fullmatch(r"[\w-]+", alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise ValueError(f"{source}: [mlflow] alias must be letters, digits, '_' or '-', and neither 'latest' nor "
                         f"v<number> (MLflow reserves them), got {alias!r}")
    values["alias"] = alias
    # MLflow's length limits, which it checks only when the first version is published (then at every sync).
    for key, longest in (("alias", 255), ("experiment", 500)):
        if key in values and len(values[key]) > longest:
            raise ValueError(f"{source}: [mlflow] {key} may have at most {longest} characters (MLflow's limit), "
                             f"got {len(values[key]):,}")
    seconds = values.get("max_seconds", 60.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
        raise ValueError(f"{source}: [mlflow] max_seconds must be a number of seconds from 0 (excluded) to 3600, "
                         f"got {seconds!r}")
    values["max_seconds"] = float(seconds)
    uri = values["tracking_uri"].strip()
    prefix = "sqlite:///"
    scheme, _, rest = uri.partition("://")
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((Path(root) / uri[len(prefix):]).resolve())
    elif not rest or scheme.lower().split("+")[0] not in _SCHEMES or (scheme.lower() in ("http", "https")
                                                                      and not urlsplit(uri).hostname):
        raise ValueError(f"{source}: [mlflow] tracking_uri must be a URI such as sqlite:///mlflow.db or "
                         f"http://host:5000 (schemes: {', '.join(_SCHEMES)}), got {uri!r}")
    values["tracking_uri"] = uri
    return MlflowSettings(**values)


def registered_name(prefix: str, unique_id: str) -> str:
    """The stream's registered model name. MLflow refuses '/' and ':' in names: they become '_', and a short
    hash of the ``unique_id`` keeps two streams from sharing a name.

    Examples
    --------
    >>> registered_name("mlma.", "zone-417")
    'mlma.zone-417'
    >>> registered_name("mlma.", "NSW / Food")
    'mlma.NSW _ Food~6e3a2776'
    """
    name = str(unique_id).replace("/", "_").replace(":", "_")
    if name != unique_id:
        name += "~" + hashlib.sha1(str(unique_id).encode()).hexdigest()[:8]
    return prefix + name


#: MLflow's HTTP client waits 120 s a request and retries 7 times with back-off by default: an unreachable
#: server held a tick's process (and its lock) for 4 to 20 minutes. Bounded unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def _bound_http_requests() -> None:
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)  # read by MLflow at each request


def _client(uri: str):
    _bound_http_requests()
    try:
        from mlflow import MlflowClient  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise ValueError(f"the MLflow integration needs MLflow: {_INSTALL}") from exc
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


#: MLflow's answers about one stream's own items (its registered model or a version deleted there, a value it
#: does not take). Connection, permission and server errors have other codes (or none): those count towards
#: "three streams failing in a row", the server being down.
_REFUSALS = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS")


@contextmanager
def _refusals_are_the_streams() -> Iterator[None]:
    """Around calls on one stream's registered model, model versions and run (not the shared experiment: a
    deleted experiment also answers INVALID_PARAMETER_VALUE, for every stream)."""
    try:
        yield
    except DeliveryRefused:
        raise
    except Exception as exc:
        code = getattr(exc, "error_code", None)
        if code in _REFUSALS:
            raise DeliveryRefused(f"MLflow refused it ({code}): {exc}") from exc
        raise


def _tag_number(value: str) -> int | None:
    """An ``mlma.version`` / ``mlma.champion`` tag's version number; None for a tag edited into something else.

    >>> _tag_number("12"), _tag_number("one"), _tag_number("0"), _tag_number("-1")
    (12, None, None, None)
    """
    value = str(value).strip()
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None


def _pages(search, query: str) -> Iterator[Any]:
    token = None
    while True:
        page = search(query, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _ms(when) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


class MlflowSync(RegistryListener):
    """Follows a project's registry into MLflow; hand it to :meth:`ModelRegistry.publish`.

    Parameters
    ----------
    settings
        Tracking URI, experiment, registered-model prefix, alias.
    artifacts
        The project's artifact store (the model files logged to MLflow are read from it).
    """

    def __init__(self, settings: MlflowSettings, artifacts: ArtifactStore) -> None:
        _bound_http_requests()  # here, in the thread that builds it, not in a sync's thread
        self.settings = settings
        self.artifacts = artifacts
        self._mlflow = None
        self._experiment_id: str | None = None
        self._registered: set[str] = set()
        self._seen_versions: dict[str, int] | None = None
        self._seen_champions: dict[str, int] = {}
        #: MLflow's version number of each (unique_id, mlma version).
        self._numbers: dict[tuple[str, int], str] = {}
        #: Whether the server takes ``tags.`` in a model-version search (an older one takes the name only).
        self._tag_filters = True
        #: The registry of the running :meth:`sync`: a champion's version deleted in MLflow is logged again from it.
        self._registry: ModelRegistry | None = None

    def __repr__(self) -> str:
        return f"MlflowSync({self.settings.tracking_uri!r}, prefix={self.settings.model_prefix!r})"

    @property
    def client(self):
        if self._mlflow is None:
            self._mlflow = _client(self.settings.tracking_uri)
        return self._mlflow

    def sync(self, registry: ModelRegistry) -> PublishReport:
        """Publish what MLflow does not hold yet (within ``max_seconds``); never raises."""
        self._registry = registry
        try:
            report = registry.publish(self, max_seconds=self.settings.max_seconds)
        finally:
            self._registry = None
        if report.error is not None or report.pending:
            # Read MLflow again next time: it may hold part of a failed delivery, another process (`mlma mlflow
            # sync`) may deliver what was left meanwhile, and a person may have deleted a registered model or
            # the experiment (a new one of that name has another id).
            self._seen_versions = None
            self._registered.clear()
            self._experiment_id = None
        return report

    # -- what MLflow holds ---------------------------------------------------------------------------------
    def seen(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        if self._seen_versions is None:
            self._read_back()
        return self._seen_versions, self._seen_champions

    def _read_back(self) -> None:
        """Which mlma versions and champions MLflow holds, from the tags this class writes."""
        prefix = self.settings.model_prefix  # LIKE's '_' matches any character: names are checked below
        versions: dict[str, int] = {}
        numbers: dict[tuple[str, int], str] = {}
        for mv in _pages(self.client.search_model_versions, f"name LIKE '{prefix}%'"):
            uid, tag = mv.tags.get("mlma.unique_id"), mv.tags.get("mlma.version")
            if uid is None or tag is None or mv.name != registered_name(prefix, uid):
                continue
            version = _tag_number(tag)
            if version is None:  # edited by hand: that one MLflow version is not taken for any of mlma's
                log.warning("MLflow model version %s of %r has the tag mlma.version=%r, not a version number: "
                            "skipped (taken for no mlma version: mlma logs its own again if needed)", mv.version,
                            mv.name, tag)
                continue
            # A version logged twice (a process that ended between logging it and giving way): the first counts.
            if (uid, version) not in numbers or int(mv.version) < int(numbers[(uid, version)]):
                numbers[(uid, version)] = str(mv.version)
            versions[uid] = max(versions.get(uid, 0), version)
            self._registered.add(mv.name)
        champions: dict[str, int] = {}
        for rm in _pages(self.client.search_registered_models, f"name LIKE '{prefix}%'"):
            uid, tag = rm.tags.get("mlma.unique_id"), rm.tags.get("mlma.champion")
            if uid is None or rm.name != registered_name(prefix, uid):
                continue
            self._registered.add(rm.name)
            champion = None if tag is None else _tag_number(tag)
            if tag is not None and champion is None:
                log.warning("MLflow registered model %r has the tag mlma.champion=%r, not a version number: "
                            "skipped (the next publish sets its alias and tag again)", rm.name, tag)
            # The champion is delivered when the alias still points at its MLflow version: one moved or
            # deleted by hand in MLflow is put back by the next publish.
            if champion is not None and str((rm.aliases or {}).get(self.settings.alias)) == numbers.get(
                    (uid, champion)):
                champions[uid] = champion
        self._seen_versions, self._seen_champions, self._numbers = versions, champions, numbers

    def _held_number(self, name: str, unique_id: str, version: int) -> str | None:
        """MLflow's number of this mlma version (the first, if it was logged twice), or None: one search by
        the registered model's name and the version's tag."""
        tag = f" AND tags.`mlma.version` = '{version}'" if self._tag_filters else ""
        quote = next((q for q in "'\"" if q not in name), None)
        if quote is not None:
            query = f"name = {quote}{name}{quote}{tag}"
        else:  # a filter cannot spell a name holding both quotes: all of the prefix's, sorted out below
            query = f"name LIKE '{self.settings.model_prefix}%'{tag}"
        try:
            found = list(_pages(self.client.search_model_versions, query))
        except Exception as exc:
            if not (self._tag_filters and getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"):
                raise
            # A server that filters model versions by name only (an older MLflow): the tags are compared here.
            self._tag_filters = False
            return self._held_number(name, unique_id, version)
        numbers = [int(mv.version) for mv in found if mv.name == name and mv.tags.get("mlma.unique_id") == unique_id
                   and mv.tags.get("mlma.version") == str(version)]
        return str(min(numbers)) if numbers else None

    # -- deliveries ---------------------------------------------------------------------------------------
    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.settings.experiment)
            self._experiment_id = (found.experiment_id if found is not None
                                   else self.client.create_experiment(self.settings.experiment,
                                                                      artifact_location=self._artifact_location(),
                                                                      tags={"mlma": "registry mirror"}))
        return self._experiment_id

    def _artifact_location(self) -> str | None:
        """Run artifacts of a SQLite store go to ``mlartifacts/`` beside its file (MLflow's default is
        ``./mlruns`` in whatever folder the process runs in); a server decides for itself."""
        uri = self.settings.tracking_uri
        if uri.startswith("sqlite:///"):
            return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        return None

    def _registered_model(self, unique_id: str) -> str:
        name = registered_name(self.settings.model_prefix, unique_id)
        if name not in self._registered:
            try:
                self.client.get_registered_model(name)
            except Exception as exc:
                if not _missing(exc):
                    raise
                self.client.create_registered_model(
                    name, tags={"mlma.unique_id": unique_id},
                    description=f"mlma stream {unique_id}: every model version mlma recorded; the "
                                f"'{self.settings.alias}' alias is the serving one")
            self._registered.add(name)
        return name

    def on_version_created(self, version: ModelVersion) -> None:
        # The model file first: a version whose file is lost fails before it leaves a run behind in MLflow. A
        # version pruned by mlma's version retention has none by design: it goes with a note instead, or it and
        # every later version of its stream would fail at each publish for good.
        # A damaged file (its bytes no longer hash to its name) will not mend itself either: the version goes with
        # a note, so that the stream's later versions and its alias are not held back behind it at every publish.
        # A missing file is left to fail: the artifacts folder may be the wrong one, or not mounted yet.
        model_bytes, broken = None, None
        if not version.pruned:
            try:
                model_bytes = self.artifacts.get_bytes(version.artifact_sha256)
            except ArtifactCorrupted as exc:
                broken = str(exc)
                log.warning("stream %r: mlma version %d goes to MLflow without its model: %s", version.unique_id,
                            version.version, broken)
        with _refusals_are_the_streams():
            name = self._registered_model(version.unique_id)
            # Another process (`mlma mlflow sync`, a second agent) may have logged it since this one read MLflow.
            number = self._held_number(name, version.unique_id, version.version)
        if number is None:
            number = self._log_version(name, version, model_bytes, broken)
        self._numbers[(version.unique_id, version.version)] = number
        self._seen_versions[version.unique_id] = max(self._seen_versions.get(version.unique_id, 0), version.version)

    def _log_version(self, name: str, version: ModelVersion, model_bytes: bytes | None,
                     broken: str | None = None) -> str:
        """A run and a model version for ``version``; returns MLflow's version number. ``model_bytes`` None: the
        version's artifact was pruned, and the run holds :func:`pruned_note` instead of the model, or (``broken``,
        the error) it is damaged, and the run holds :func:`broken_note`."""
        client = self.client
        tags = {"mlma.unique_id": version.unique_id, "mlma.version": str(version.version),
                "mlma.spec": version.spec, "mlma.artifact_sha256": version.artifact_sha256,
                "mlma.check": str(version.check.get("result", "")), "mlflow.runName":
                f"{version.unique_id} v{version.version}"}
        description = f"mlma version {version.version} of {version.unique_id}"
        if broken is not None:
            tags["mlma.artifact_broken"] = broken[:5000]
            description += "; its model file was found damaged when it was mirrored"
        elif model_bytes is None:
            tags["mlma.artifact_pruned"] = version.artifact_pruned_at.isoformat()
            description += (f"; its model file was deleted by mlma's version retention on "
                            f"{version.artifact_pruned_at:%Y-%m-%d %H:%M} UTC, before it was mirrored")
        run = client.create_run(self._experiment(), start_time=_ms(version.created_at), tags=tags)
        run_id = run.info.run_id
        params = {"spec": version.spec, "train_start": version.train_start, "train_end": version.train_end,
                  "created_tick": version.created_tick,
                  **{f"param.{k}": v for k, v in version.params.items()}}
        metrics = {k: v for k, v in {**version.metrics, **{f"check_{k}": v for k, v in version.check.items()}}.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        from mlflow.entities import Metric, Param  # noqa: PLC0415 - optional extra

        stamp = _ms(version.created_at) or int(time.time() * 1000)
        with _refusals_are_the_streams():
            client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items() if v is not None],
                             metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
            reason = version.check.get("why") or version.metrics.get("fallback_reason")
            if reason:
                client.set_tag(run_id, "mlma.reason", str(reason)[:5000])
            with tempfile.TemporaryDirectory() as tmp:
                if broken is not None:
                    path = Path(tmp) / BROKEN_NOTE
                    path.write_text(broken_note(version, broken), encoding="utf-8")
                elif model_bytes is None:
                    path = Path(tmp) / PRUNED_NOTE
                    path.write_text(pruned_note(version), encoding="utf-8")
                else:
                    path = Path(tmp) / "model.pkl"
                    path.write_bytes(model_bytes)
                client.log_artifact(run_id, str(path), artifact_path="model")
            client.set_terminated(run_id, end_time=stamp)
            mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run_id,
                                             tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")},
                                             description=description)
            # Two processes that asked at once both logged it: the later MLflow version gives way to the first.
            # Both see the first once both have logged, and whichever asks before the other has logged is first.
            first = self._held_number(name, version.unique_id, version.version)
            if first is not None and first != str(mv.version):
                log.info("mlma version %d of %r was logged to MLflow by another process meanwhile: its MLflow "
                         "version %s is kept, %s deleted", version.version, version.unique_id, first, mv.version)
                client.delete_model_version(name, str(mv.version))
                client.delete_run(run_id)
                return first
        return str(mv.version)

    def on_champion_moved(self, unique_id: str, change: ChampionChange) -> None:
        if (unique_id, change.version) not in self._numbers or not self._alias_moved(unique_id, change):
            # Not in MLflow: a person deleted that version there (cleaning up old versions) since it was logged.
            self._log_again(unique_id, change)
            if not self._alias_moved(unique_id, change):
                raise DeliveryRefused(f"version {change.version} of {unique_id!r} was deleted in MLflow again "
                                      "while it was logged again")
        self._seen_champions[unique_id] = change.version

    def _alias_moved(self, unique_id: str, change: ChampionChange) -> bool:
        """Points the alias at the champion's MLflow version; False if MLflow no longer has that version."""
        with _refusals_are_the_streams():
            name = self._registered_model(unique_id)
            try:
                self.client.set_registered_model_alias(name, self.settings.alias,
                                                       self._numbers[(unique_id, change.version)])
            except Exception as exc:
                if not _missing(exc):
                    raise
                # The version or its whole registered model was deleted: both are asked for again.
                del self._numbers[(unique_id, change.version)]
                self._registered.discard(name)
                return False
            self.client.set_registered_model_tag(name, "mlma.champion", str(change.version))
            self.client.set_registered_model_tag(name, "mlma.champion_moved", f"{change}"[:5000])
        return True

    def _log_again(self, unique_id: str, change: ChampionChange) -> None:
        """Logs the champion's version from mlma's registry and artifact, as its first delivery did."""
        if self._registry is None:  # ModelRegistry.publish called with this listener directly
            raise DeliveryRefused(f"version {change.version} of {unique_id!r} is not in MLflow; "
                                  "MlflowSync.sync(registry) logs it again")
        log.info("version %d of %r, the champion, is not in MLflow (deleted there?): logged again", change.version,
                 unique_id)
        self.on_version_created(self._registry.version(change.stream_id, change.version))


#: The file a pruned version's run holds in its ``model`` folder instead of ``model.pkl``.
PRUNED_NOTE = "ARTIFACT_PRUNED.txt"
#: The file a version's MLflow run holds in place of a model file found damaged when it was mirrored.
BROKEN_NOTE = "ARTIFACT_BROKEN.txt"


def pruned_note(version: ModelVersion) -> str:
    """What the run of a version whose artifact was pruned before it reached MLflow holds instead of the model.

    Examples
    --------
    >>> import datetime as dt
    >>> v = ModelVersion(7, "zone-417", 2, dt.datetime(2026, 11, 1, tzinfo=dt.UTC), 3, None, None, "ridge", {}, {}, {},
    ...                  "ab" * 32, 5120, artifact_pruned_at=dt.datetime(2026, 12, 7, 4, 30, tzinfo=dt.UTC))
    >>> print(pruned_note(v))  # doctest: +NORMALIZE_WHITESPACE
    The model file of mlma version 2 of stream 'zone-417' (artifact sha256
    abababababababababababababababababababababababababababababababab, 5120 bytes) was deleted by mlma's version
    retention ([registry] keep_versions in mlma.toml, or `mlma prune --versions`) on 2026-12-07 04:30 UTC, before
    this version was mirrored to MLflow. The run keeps the version's parameters, metrics and tags; the model itself
    cannot be loaded, from mlma or from here.
    """
    return (f"The model file of mlma version {version.version} of stream {version.unique_id!r} (artifact sha256 "
            f"{version.artifact_sha256}, {version.artifact_bytes} bytes) was deleted by mlma's version retention "
            f"([registry] keep_versions in mlma.toml, or `mlma prune --versions`) on "
            f"{version.artifact_pruned_at:%Y-%m-%d %H:%M} UTC, before this version was mirrored to MLflow. The run "
            f"keeps the version's parameters, metrics and tags; the model itself cannot be loaded, from mlma or from "
            f"here.")


def broken_note(version: ModelVersion, error: str) -> str:
    """What the run of a version whose model file was found damaged when mirrored holds instead of the model."""
    return (f"The model file of mlma version {version.version} of stream {version.unique_id!r} (artifact sha256 "
            f"{version.artifact_sha256}, {version.artifact_bytes} bytes) was found damaged when this version was "
            f"mirrored to MLflow ({error}). The run keeps the version's parameters, metrics and tags; the model "
            f"itself cannot be loaded, from mlma or from here. mlma does not serve this version (it rolls back from "
            f"it, escalated as artifact-broken).")


def project_sync(config) -> MlflowSync | None:
    """The project's :class:`MlflowSync`, or None when ``mlma.toml`` has no ``[mlflow]`` section."""
    settings = getattr(config, "mlflow", None)
    if settings is None:
        return None
    return MlflowSync(settings, ArtifactStore(config.artifacts_dir))


# -- starting from MLflow --------------------------------------------------------------------------------
def project_stem(folder: Path) -> str:
    """A new project's name in MLflow, from its folder: its registered models are ``<stem>.<unique_id>`` and
    its experiment ``<stem>``, so that it does not take another project's models in a shared tracking store.

    >>> project_stem(Path("/srv/Demand forecasts"))
    'Demand-forecasts'
    >>> project_stem(Path("/"))
    'project'
    """
    return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(folder).name).strip("-") or "project"


def free_project_stem(stem: str, tracking_uri: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``..., the first with no registered model named ``<stem>.*`` and no
    experiment ``<stem>`` in the tracking store (one left by a project that was there before, or a folder
    named like the default prefix, ``mlma``). Raises what MLflow raises when the store cannot be read."""
    client = _client(tracking_uri)
    for n in range(1, 1000):
        candidate = stem if n == 1 else f"{stem}-{n}"
        # LIKE's '_' matches any character: a model named with another character there only skips a stem.
        if not client.search_registered_models(f"name LIKE '{candidate}.%'", max_results=1) \
                and client.get_experiment_by_name(candidate) is None:
            return candidate
    raise ValueError(f"MLflow at {tracking_uri} has registered models under {stem}. to {stem}-999.")


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's; TOML takes no surrogate pairs (so non-ASCII stays as is) and wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def settings_toml(settings: MlflowSettings, *, comment: str | None = None) -> str:
    """The ``[mlflow]`` section of ``mlma.toml`` for ``settings`` (``mlma init``), with every value escaped.

    >>> print(settings_toml(MlflowSettings('sqlite:////p/"x"/m.db', experiment="demand", model_prefix="demand."),
    ...                     comment="from models:/a/1"), end="")
    [mlflow]
    # from models:/a/1
    tracking_uri = "sqlite:////p/\\"x\\"/m.db"
    experiment = "demand"
    model_prefix = "demand."
    """
    lines = ["[mlflow]"]
    if comment:
        lines.append("# " + _toml_string(comment)[1:-1])  # escaped too: a comment holds no control characters
    lines += [f"{key} = {_toml_string(getattr(settings, key))}" for key in ("tracking_uri", "experiment",
                                                                           "model_prefix")]
    text = "\n".join(lines) + "\n"
    written = tomllib.loads(text)["mlflow"]
    if written != {"tracking_uri": settings.tracking_uri, "experiment": settings.experiment,
                   "model_prefix": settings.model_prefix}:  # cannot happen with JSON's escapes; said if it did
        raise ValueError(f"cannot write the [mlflow] settings as TOML: {written!r}")
    return text


def import_model(model_uri: str, tracking_uri: str, folder: Path) -> tuple[Path, str]:
    """Copy a model registered in MLflow into ``folder`` as a pickle; returns the file and the resolved URI.

    ``model_uri`` is ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` (the alias is resolved to
    its version now, so that the project does not change when the alias moves later). The model is either a
    pickled mlma model or regressor logged as an artifact (as :class:`MlflowSync` logs ``model/model.pkl``)
    or a model logged with ``mlflow.sklearn``; its class must be importable here.
    """
    if not isinstance(model_uri, str) or not model_uri.startswith("models:/"):
        raise ValueError(f"an MLflow model URI is models:/<name>/<version> or models:/<name>@<alias>, "
                         f"got {model_uri!r}")
    client = _client(tracking_uri)
    body = model_uri[len("models:/"):]
    try:
        # The version form first and the alias after the last "@", as MLflow reads its URIs: a registered
        # model's name may hold an "@" (models:/team@x/1 was read as the alias "x/1" of a model "team").
        name, _, number = body.rpartition("/")
        if name and number.isdigit():
            version = client.get_model_version(name, number)
        elif "@" in body:
            name, _, alias = body.rpartition("@")
            version = client.get_model_version_by_alias(name, alias)
        else:
            raise ValueError(f"{model_uri!r} names no version: use models:/<name>/<version> or "
                             "models:/<name>@<alias>")
    except Exception as exc:
        if isinstance(exc, ValueError) and not hasattr(exc, "error_code"):
            raise
        raise ValueError(f"MLflow at {tracking_uri} has no model {model_uri!r}: {exc}") from None
    resolved = f"models:/{version.name}/{version.version}"
    from mlflow.artifacts import download_artifacts  # noqa: PLC0415 - optional extra

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(download_artifacts(artifact_uri=client.get_model_version_download_uri(version.name,
                                                                                             version.version),
                                            dst_path=tmp, tracking_uri=tracking_uri))
        except Exception as exc:  # noqa: BLE001 - MLflow's errors: files deleted, an artifact store unreachable
            raise ValueError(f"{resolved}: its model files cannot be downloaded from MLflow at {tracking_uri} "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
        model = _load_downloaded(local, resolved)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{registered_name('', version.name)}-v{version.version}.pkl"
    target.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return target, resolved


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _unpickled(path: Path, label: str):
    """The object pickled in ``path``, or a ``ValueError`` naming the file and why it cannot be read: its class
    is not importable here, or the bytes are no pickle (pickle raises many kinds for those, ``EOFError`` for an
    empty file, which a command line took for an end of input)."""
    try:
        return pickle.loads(path.read_bytes())
    except ImportError as exc:  # ModuleNotFoundError too
        raise ValueError(f"{label}: {path.name} holds a model whose code cannot be imported here ({exc}): install "
                         "the package that defines its class in this environment") from None
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, EOFError, AttributeError, ...
        raise ValueError(f"{label}: {path.name} is not a readable pickle ({type(exc).__name__}: "
                         f"{_first_line(exc) or 'empty or cut short'})") from None


def _load_downloaded(local: Path, label: str):
    if local.is_file():
        return _unpickled(local, label)
    for note in (PRUNED_NOTE, BROKEN_NOTE):  # a version mlma mirrored without its model (deleted, damaged)
        if (local / note).is_file():
            raise ValueError(f"{label} holds no model: {(local / note).read_text(encoding='utf-8').strip()}")
    if (local / "MLmodel").is_file():
        import mlflow.sklearn  # noqa: PLC0415 - optional extra

        text = (local / "MLmodel").read_text()
        if "sklearn:" not in text:
            raise ValueError(f"{label} is an MLflow model without the sklearn flavour; mlma takes a pickled "
                             "mlma model or a scikit-learn regressor")
        try:
            return mlflow.sklearn.load_model(str(local))
        except ImportError as exc:
            raise ValueError(f"{label}: its scikit-learn model needs code that cannot be imported here "
                             f"({exc})") from None
        except Exception as exc:  # noqa: BLE001 - a damaged or incomplete MLflow model folder
            raise ValueError(f"{label}: its scikit-learn model cannot be loaded ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from None
    pickles = sorted(local.rglob("*.pkl"))
    if len(pickles) == 1:
        return _unpickled(pickles[0], label)
    raise ValueError(f"{label} holds {len(pickles)} .pkl files and no MLmodel file; cannot tell which is the model")
