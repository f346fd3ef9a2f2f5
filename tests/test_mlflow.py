"""The MLflow mirror of the registry, against a local MLflow store (SQLite, no server)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

from mlflow.entities import ViewType  # noqa: E402

from mlma.control import Operations  # noqa: E402
from mlma.live import LiveAgent, NotReady  # noqa: E402
from mlma.mlflow_sync import MlflowSync, project_sync, registered_name  # noqa: E402
from mlma.models import ForecastContext, make_forecaster  # noqa: E402
from mlma.project import ConfigError, init_project, load_config  # noqa: E402
from mlma.registry import ModelRegistry  # noqa: E402
from mlma.simulate import simulate_platform  # noqa: E402
from mlma.store import Store  # noqa: E402
from test_live import day_chunks  # noqa: E402

FIRST_TICK = 21


@pytest.fixture(scope="module")
def platform() -> pd.DataFrame:
    """12 zones, 36 days of hourly orders with frequent events, so that there are re-trainings, promotions and
    rejected challengers."""
    return simulate_platform(12, 36, seed=5, event_rate=4).data


#: The MLMA level of the replays below (see make_project).
REPLAY_ALPHA = 0.5


def make_project(root: Path, *, mlflow: bool = True) -> Path:
    init_project(root, model="ridge")
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    text = text.replace("initial_ticks = 0", f"initial_ticks = {FIRST_TICK}")
    # The replay must re-train, promote and reject, so that MLflow mirrors every kind of version: the tests-only
    # default (q = 0.01) re-trains too few streams in these five weeks, and 0.2 rejects no challenger here.
    text, found = re.subn(r"(?m)^alpha = .*$", f"alpha = {REPLAY_ALPHA}", text)
    assert found == 1, "alpha is not in the template"
    if mlflow:
        text += '\n[mlflow]\ntracking_uri = "sqlite:///mlflow.db"\nexperiment = "zones"\n'
    (root / "mlma.toml").write_text(text)
    return root


def replay_with_sync(root: Path, frame: pd.DataFrame) -> None:
    """Feed one day at a time and tick; the live agent publishes to MLflow after every tick by itself."""
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        assert live.mlflow is not None, "a project with an [mlflow] section mirrors its registry"
        for i, chunk in enumerate(day_chunks(frame, FIRST_TICK)):
            store.ingest_frame(chunk, f"day-{i}")
            live.step()
            # A second, independent publisher finds nothing left to send: the agent's own hook sent it all.
            report = project_sync(config).sync(live.registry)
            assert report.error is None and report.pending == 0, report
            assert report.versions == 0 and report.champions == 0, report
        with pytest.raises(NotReady):
            live.step()


def mlflow_state(sync: MlflowSync) -> tuple[dict, dict]:
    """{(unique_id, mlma version): MLflow model version} and {unique_id: mlma version under the alias}."""
    client = sync.client
    versions, champions = {}, {}
    for mv in client.search_model_versions("name LIKE 'mlma.%'", max_results=1000):
        key = (mv.tags["mlma.unique_id"], int(mv.tags["mlma.version"]))
        assert key not in versions, f"{key} is in MLflow twice"
        versions[key] = mv
    for rm in client.search_registered_models("name LIKE 'mlma.%'", max_results=1000):
        uid = rm.tags["mlma.unique_id"]
        champion = client.get_model_version_by_alias(rm.name, "champion")
        champions[uid] = int(champion.tags["mlma.version"])
    return versions, champions


def mlma_state(config) -> tuple[pd.DataFrame, dict]:
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        versions = pd.concat([pd.DataFrame([v.__dict__ for v in registry.versions(uid)])
                              for uid in store.streams()["unique_id"]], ignore_index=True)
        champions = registry.champions()
    return versions, dict(zip(champions["unique_id"], champions["version"].astype(int)))


def test_mlflow_holds_every_version_and_follows_the_champion_through_a_replay_and_a_rollback(tmp_path, platform):
    root = make_project(tmp_path / "p")
    replay_with_sync(root, platform)
    config = load_config(root)
    sync = project_sync(config)
    versions, champions = mlma_state(config)
    in_mlflow, aliases = mlflow_state(sync)
    # Every version mlma recorded, once, with its training window, metrics and artifact; challengers too.
    assert set(in_mlflow) == set(zip(versions["unique_id"], versions["version"]))
    assert (versions.groupby("unique_id")["version"].max() > 1).sum() >= 3, "the events should cause re-trainings"
    assert {v["result"] for v in versions["check"]} >= {"promoted", "rejected", "not-checked"}
    assert aliases == champions
    client = sync.client
    row = versions.iloc[-1]
    mv = in_mlflow[(row["unique_id"], row["version"])]
    run = client.get_run(mv.run_id)
    assert run.data.params["spec"] == "ridge"
    assert pd.Timestamp(run.data.params["train_end"]) == row["train_end"]
    assert run.data.metrics["n_train"] == row["metrics"]["n_train"]
    assert run.info.experiment_id == client.get_experiment_by_name("zones").experiment_id
    assert run.info.artifact_uri.startswith((root / "mlartifacts").resolve().as_uri())  # beside mlflow.db
    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(run_id=mv.run_id, artifact_path="model/model.pkl", dst_path=str(tmp_path / "d"),
                                    tracking_uri=config.mlflow.tracking_uri))
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        assert local.read_bytes() == registry.artifacts.get_bytes(row["artifact_sha256"])
        # A person rolls a stream back in mlma: MLflow's alias follows at the next publish.
        moved = versions[versions["version"] > 1]["unique_id"].iloc[0]
        before = champions[moved]
        earlier = next(v.version for v in registry.versions(moved) if v.version != before)
        Operations(store, registry=registry).rollback(moved, earlier, by="user:ana", reason="test")
        report = project_sync(config).sync(registry)
    assert (report.versions, report.champions, report.error) == (0, 1, None)
    _, aliases = mlflow_state(sync)
    assert aliases[moved] == earlier != before
    assert client.get_registered_model(registered_name("mlma.", moved)).tags["mlma.champion_moved"].startswith(
        f"rollback to version {earlier} by user:ana")


def test_a_failed_delivery_is_logged_not_raised_and_completed_next_time_without_duplicates(tmp_path, platform,
                                                                                          monkeypatch, caplog):
    root = make_project(tmp_path / "p")
    config = load_config(root)
    frame = platform[platform["ds"] < platform["ds"].min() + pd.Timedelta(days=FIRST_TICK)]
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        live.mlflow = None  # this test drives the publisher by hand, with a delivery failing half-way
        store.ingest_frame(frame, "history")
        live.step()  # start-up: one first model per zone
        registry = live.registry
        sync = project_sync(config)
        real = sync.client.create_model_version
        calls = {"n": 0}

        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError("disk full")
            return real(*args, **kwargs)

        monkeypatch.setattr(sync.client, "create_model_version", flaky)
        report = sync.sync(registry)
        # That stream's items wait for the next publish; the other streams' are delivered (one stream's trouble
        # used to stop the mirror for the whole fleet).
        assert report.error.endswith(": OSError: disk full") and report.failed_streams == 1
        assert (report.versions, report.champions, report.pending) == (11, 11, 2)
        assert "disk full" in caplog.text
        # The next publish (the next tick) delivers the rest; nothing twice.
        report = sync.sync(registry)
        assert report.error is None and report.versions == 1 and report.champions == 1
        in_mlflow, aliases = mlflow_state(sync)
        assert len(in_mlflow) == 12 and aliases == {uid: 1 for uid in frame["unique_id"].unique()}
        # A fresh process reads back what MLflow holds and has nothing to add.
        again = project_sync(config).sync(registry)
        assert (again.versions, again.champions, again.pending) == (0, 0, 0)


def test_an_unreachable_mlflow_never_breaks_the_caller(tmp_path):
    root = make_project(tmp_path / "p")
    (tmp_path / "blocker").write_text("a file where MLflow's folder should be")
    (root / "mlma.toml").write_text((root / "mlma.toml").read_text().replace(
        "sqlite:///mlflow.db", f"sqlite:///{tmp_path}/blocker/mlflow.db"))
    config = load_config(root)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        sid = int(store.stream_ids(["zone-1"])[0])
        registry.register(sid, {"level": 1.0}, spec="mean", promote=True)
        report = project_sync(config).sync(registry)
    assert report.error is not None and report.versions == 0


@pytest.mark.parametrize(("section", "message"), [
    ("[mlflow]\nexperiment = 'x'\n", "needs tracking_uri"),
    ("[mlflow]\ntracking_uri = 'sqlite:///m.db'\nprefix = 'x'\n", "unknown key 'prefix' in \\[mlflow\\]"),
    ("[mlflow]\ntracking_uri = 'sqlite:///m.db'\nmodel_prefix = 'a/b'\n", "cannot contain"),
    ("[mlflow]\ntracking_uri = 'mlflow.db'\n", "must be a URI"),
    ("[mlflow]\ntracking_uri = 'htp://typo:5000'\n", "must be a URI .*got 'htp://typo:5000'"),
    ("[mlflow]\ntracking_uri = 'http://'\n", "must be a URI"),
    ("[mlflow]\ntracking_uri = 'sqlite:///m.db'\nalias = 'latest'\n", "neither 'latest' nor v<number>"),
    ("[mlflow]\ntracking_uri = 'sqlite:///m.db'\nalias = 'my champion!'\n", "alias must be letters"),
    ("[mlflow]\ntracking_uri = 'sqlite:///m.db'\nmax_seconds = inf\n", "max_seconds must be a number of seconds"),
])
def test_bad_mlflow_settings_are_named(tmp_path, section, message):
    root = make_project(tmp_path / "p", mlflow=False)
    (root / "mlma.toml").write_text((root / "mlma.toml").read_text() + "\n" + section)
    with pytest.raises(ConfigError, match=message):
        load_config(root)


def test_a_project_starts_from_a_model_registered_in_mlflow(tmp_path):
    from typer.testing import CliRunner

    from mlma.cli import app

    # A model in MLflow: here one mlma logged there for another project.
    source = make_project(tmp_path / "source")
    config = load_config(source)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    ds = np.arange("2024-01-01", "2024-02-01", dtype="datetime64[h]").astype("datetime64[ns]")
    y = 50 + 10 * np.sin(2 * np.pi * np.arange(ds.size) / 24)
    fitted = make_forecaster("ridge", ctx, alpha=7.0).fit(ds, y)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        registry.register(int(store.stream_ids(["zone-9"])[0]), fitted, spec="ridge", promote=True)
        assert project_sync(config).sync(registry).error is None
    uri = config.mlflow.tracking_uri
    # `mlma mlflow sync` publishes on demand (here: nothing new), and names a project without [mlflow].
    result = CliRunner().invoke(app, ["mlflow", "sync", "--project", str(source)])
    assert result.exit_code == 0 and "logged 0 version(s) and 0 champion move(s)" in " ".join(result.output.split())
    plain = make_project(tmp_path / "plain", mlflow=False)
    result = CliRunner().invoke(app, ["mlflow", "sync", "--project", str(plain)])
    assert result.exit_code == 2 and "no [mlflow] section" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["init", str(tmp_path / "new"), "--from-mlflow", "models:/mlma.zone-9@champion",
                                      "--mlflow-uri", uri])
    assert result.exit_code == 0, result.output
    assert "models:/mlma.zone-9/1 from MLflow" in result.output
    new = load_config(tmp_path / "new")
    assert new.model.spec.startswith("pickle:") and new.mlflow.tracking_uri == uri
    # Every stream of the new project fits its own copy of that model (same class and parameters).
    model = make_forecaster(new.model.spec, ctx)
    assert type(model).__name__ == "RidgeForecaster" and model.alpha == 7.0
    refit = model.fit(ds, 2 * y)
    assert not np.allclose(refit.predict(ds, 2 * y, ds[-24:] + np.timedelta64(24, "h")),
                           fitted.predict(ds, y, ds[-24:] + np.timedelta64(24, "h")))
    assert pickle.loads(Path(new.model.spec[len("pickle:"):]).read_bytes()).alpha == 7.0
    # A name MLflow does not have is a clear error, and no project is made.
    result = CliRunner().invoke(app, ["init", str(tmp_path / "bad"), "--from-mlflow", "models:/nope@champion",
                                      "--mlflow-uri", uri])
    assert result.exit_code == 2 and re.search(r"has no model .models:/nope@champion.", " ".join(result.output.split()))
    assert not (tmp_path / "bad" / "mlma.toml").exists()
    # MLflow allows an "@" in a registered model's name: models:/team@x/1 was read as the alias "x/1" of "team".
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    published = client.get_model_version("mlma.zone-9", "1")
    client.create_registered_model("team@x")
    client.create_model_version("team@x", published.source, run_id=published.run_id)
    client.set_registered_model_alias("team@x", "best", "1")
    for i, given in enumerate(["models:/team@x/1", "models:/team@x@best"]):
        result = CliRunner().invoke(app, ["init", str(tmp_path / f"at{i}"), "--from-mlflow", given,
                                          "--mlflow-uri", uri])
        assert result.exit_code == 0 and "models:/team@x/1 from MLflow" in result.output, result.output


def test_init_from_an_mlflow_version_whose_model_cannot_be_read_is_a_clear_error(tmp_path):
    """A model.pkl that is no pickle, an empty one, one whose class is not importable here, and a version whose
    files were deleted: `mlma init --from-mlflow` ended in a traceback (or a bare "Aborted." for the empty file,
    an EOFError taken for Ctrl-D). Each is one line naming the version and why, exit 2, and no project."""
    import shutil
    import sys
    import tempfile
    import types

    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from mlma.cli import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("ext", artifact_location=(tmp_path / "art").as_uri())

    def register(name: str, data: bytes) -> str:
        run = client.create_run(experiment)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.pkl"
            path.write_bytes(data)
            client.log_artifact(run.info.run_id, str(path), artifact_path="model")
        client.create_registered_model(name)
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        return run.info.artifact_uri

    register("ext.garbage", b"not a pickle at all")
    register("ext.empty", b"")
    # A pickle of a class in a module this environment does not have (made for the test, then taken away).
    module = types.ModuleType("no_such_module_x")
    exec("class M:\n    pass", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        register("ext.noimport", pickle.dumps(module.M()))
    finally:
        del sys.modules[module.__name__]
    gone = register("ext.gone", pickle.dumps({"a": 1}))
    shutil.rmtree(Path(gone.removeprefix("file://")) / "model")
    expected = {"garbage": "model.pkl is not a readable pickle (UnpicklingError",
                "empty": "model.pkl is not a readable pickle (EOFError",
                "noimport": "holds a model whose code cannot be imported here (No module named 'no_such_module_x')",
                "gone": "its model files cannot be downloaded from MLflow"}
    for case, message in expected.items():
        result = CliRunner().invoke(app, ["init", str(tmp_path / case), "--from-mlflow", f"models:/ext.{case}/1",
                                          "--mlflow-uri", uri])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and f"models:/ext.{case}/1: " in said and message in said, (case, said)
        assert "Traceback" not in said and not (tmp_path / case / "mlma.toml").exists()


def _started_replica(tmp_path, platform):
    """A project after its start-up tick (one version per zone), its config and the mirror, synced once."""
    root = make_project(tmp_path / "p")
    config = load_config(root)
    frame = platform[platform["ds"] < platform["ds"].min() + pd.Timedelta(days=FIRST_TICK)]
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(frame, "history")
        live.step()
    return config, sorted(frame["unique_id"].unique())


def test_one_streams_trouble_in_mlflow_stays_with_that_stream(tmp_path, platform):
    """A registered model deleted by a person in MLflow, and model files lost from the artifacts (of the
    first streams in id order, three of them: not taken for the server being down): each stopped the mirror
    for the whole fleet (for the agent's life, or for good), and a lost file left a run behind on every attempt.
    Now the other streams are mirrored, and the deleted model is made again."""
    config, zones = _started_replica(tmp_path, platform)
    deleted, lost = zones[4], zones[:3]
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        sync = project_sync(config)
        assert sync.sync(registry).error is None
        sync.client.delete_registered_model(registered_name("mlma.", deleted))
        for uid in zones:  # a second version of every zone (the lost zones' are not put in service)
            registry.register(uid, {"refit of": uid}, spec="ridge", promote=uid not in lost)
        for uid in lost:
            registry.artifacts.path(registry.version(uid, 2).artifact_sha256).unlink()
        report = sync.sync(registry)
        assert report.failed_streams == 4, report  # the lost files, and the deleted model until read back
        assert (report.versions, report.champions) == (len(zones) - 4, len(zones) - 4)
        again = sync.sync(registry)  # read back: the deleted zone is registered again and gets its versions
        assert again.failed_streams == 3 and again.error.startswith(f"stream {lost[0]!r}: ArtifactMissing")
        assert (again.versions, again.champions) == (2, 1)
        in_mlflow, aliases = mlflow_state(sync)
        assert set(in_mlflow) == {(uid, v) for uid in zones for v in (1, 2)} - {(uid, 2) for uid in lost}
        assert aliases == {uid: 1 if uid in lost else 2 for uid in zones}
        # No run is left behind for a version whose file is lost.
        runs = sync.client.search_runs([sync._experiment()], filter_string=f"tags.`mlma.unique_id` = '{lost[0]}' "
                                                                          "and tags.`mlma.version` = '2'")
        assert len(runs) == 0


def test_a_version_whose_file_was_damaged_before_mlflow_had_it_goes_with_a_note_and_the_stream_goes_on(
        tmp_path, platform):
    """A model file damaged (its bytes no longer hash to its name) before MLflow had its version failed every
    publish of that stream, for good: its later versions and the alias stayed behind while mlma served a newer
    version. Now the damaged version goes with a note in place of the model (tagged mlma.artifact_broken), the
    stream's later versions and alias follow, and `init --from-mlflow` on it is refused naming the damage."""
    from mlma.mlflow_sync import BROKEN_NOTE, import_model

    config, zones = _started_replica(tmp_path, platform)
    uid = zones[2]
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        sync = project_sync(config)
        assert sync.sync(registry).error is None
        registry.register(uid, {"refit of": uid, "n": 2}, spec="ridge", promote=True)
        path = registry.artifacts.path(registry.version(uid, 2).artifact_sha256)
        path.write_bytes(b"garbage")
        registry.register(uid, {"refit of": uid, "n": 3}, spec="ridge", promote=True)
        report = sync.sync(registry)
        assert report.error is None and report.failed_streams == 0, report
        in_mlflow, aliases = mlflow_state(sync)
        assert {(uid, 2), (uid, 3)} <= set(in_mlflow) and aliases[uid] == 3
        runs = sync.client.search_runs([sync._experiment()], filter_string=f"tags.`mlma.unique_id` = '{uid}' "
                                                                          "and tags.`mlma.version` = '2'")
        assert len(runs) == 1 and "is corrupted" in runs[0].data.tags["mlma.artifact_broken"]
        artifacts = [a.path for a in sync.client.list_artifacts(runs[0].info.run_id, "model")]
        assert artifacts == [f"model/{BROKEN_NOTE}"]
        with pytest.raises(ValueError, match="holds no model: The model file of mlma version 2 .* was found damaged"):
            import_model(f"models:/{registered_name('mlma.', uid)}/{in_mlflow[(uid, 2)].version}",
                         config.mlflow.tracking_uri, tmp_path / "imported")
        assert sync.sync(registry).versions == 0                # delivered once, not again


def test_a_version_pruned_before_mlflow_had_it_is_delivered_without_its_model(tmp_path, platform):
    """MLflow was down while the agent re-trained, then version retention (`[registry] keep_versions`) deleted the
    model files of old versions MLflow had not received: each publish offered the oldest of them first, failed
    reading its file, and that stream's later versions and champion moves never went, for good. Now such a
    version goes without its model: a run with its parameters, metrics and tags and a note in place of the model,
    and a model version, so that a read-back counts it as delivered; the alias follows mlma's champion, which is
    never a pruned version."""
    from mlflow.exceptions import MlflowException

    from mlma.mlflow_sync import PRUNED_NOTE, import_model

    config, zones = _started_replica(tmp_path, platform)   # version 1 of every zone is in MLflow, with its model
    behind = zones[:4]
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        sync = project_sync(config)
        assert sync.sync(registry).error is None
        # MLflow goes down; meanwhile each of four zones gets versions 2-4, promoted in turn, and a rejected 5.
        real_create_run = sync.client.create_run

        def unreachable(*args, **kwargs):
            raise MlflowException("API request to http://mlflow:5000/api/2.0/mlflow/runs/create failed with "
                                  "exception ConnectionError")

        sync.client.create_run = unreachable
        for uid in behind:
            for n in (2, 3, 4):
                registry.register(uid, {"refit of": uid, "n": n}, spec="ridge", promote=True)
            registry.register(uid, {"refit of": uid, "n": 5}, spec="ridge", check={"result": "rejected"})
            assert sync.sync(registry).versions == 0
        # Retention keeps the newest version, the serving one (4) and the roll-back target (3): 1 and 2 go.
        pruned = registry.prune_versions(1, by="user:ana", reason="disk")
        assert (pruned.versions, pruned.streams) == (2 * len(behind), len(behind))
        assert all([v.version for v in registry.versions(uid) if v.pruned] == [1, 2] for uid in behind)
        sync.client.create_run = real_create_run                 # MLflow is back
        report = sync.sync(registry)
        assert (report.error, report.failed_streams, report.pending) == (None, 0, 0), report
        assert (report.versions, report.champions) == (4 * len(behind), len(behind))
        champions = {uid: registry.champion(uid).version for uid in zones}
        pruned_at = {uid: registry.version(uid, 2).artifact_pruned_at for uid in behind}
        # A process that reads MLflow back finds nothing missing.
        again = project_sync(config).sync(registry)
        assert (again.versions, again.champions, again.pending, again.error) == (0, 0, 0, None), again
    in_mlflow, aliases = mlflow_state(sync)
    assert set(in_mlflow) == {(uid, v) for uid in zones for v in (1,)} | {(uid, v) for uid in behind
                                                                          for v in (2, 3, 4, 5)}
    assert aliases == champions and {aliases[uid] for uid in behind} == {4}
    client = sync.client
    for uid in behind:
        aliased = client.get_model_version_by_alias(registered_name("mlma.", uid), "champion")
        assert "mlma.artifact_pruned" not in aliased.tags                 # the champion is never a pruned version
        gone = in_mlflow[(uid, 2)]
        run = client.get_run(gone.run_id)
        assert gone.tags["mlma.artifact_pruned"] == run.data.tags["mlma.artifact_pruned"] == \
            pruned_at[uid].isoformat()
        assert run.data.params["spec"] == "ridge" and run.data.tags["mlma.version"] == gone.tags["mlma.version"] == "2"
        assert [a.path for a in client.list_artifacts(gone.run_id, "model")] == [f"model/{PRUNED_NOTE}"]
        assert "version retention" in gone.description
        # Version 1 was in MLflow before it was pruned in mlma: MLflow keeps its model.
        kept = in_mlflow[(uid, 1)]
        assert "mlma.artifact_pruned" not in kept.tags
        assert [a.path for a in client.list_artifacts(kept.run_id, "model")] == ["model/model.pkl"]
        for v in (3, 4, 5):
            assert [a.path for a in client.list_artifacts(in_mlflow[(uid, v)].run_id, "model")] == ["model/model.pkl"]
    from mlflow.artifacts import download_artifacts

    note = Path(download_artifacts(run_id=in_mlflow[(behind[0], 2)].run_id, artifact_path=f"model/{PRUNED_NOTE}",
                                   dst_path=str(tmp_path / "d"), tracking_uri=config.mlflow.tracking_uri)).read_text()
    said = " ".join(note.split())
    assert f"mlma version 2 of stream {behind[0]!r}" in said and "deleted by mlma's version retention" in said
    assert f"on {pruned_at[behind[0]]:%Y-%m-%d %H:%M} UTC" in said and "[registry] keep_versions" in said
    # Starting a project from such a version says why there is no model to copy.
    with pytest.raises(ValueError, match=r"holds no model: The model file of mlma version 2 .*version retention"):
        import_model(f"models:/{registered_name('mlma.', behind[0])}/{in_mlflow[(behind[0], 2)].version}",
                     config.mlflow.tracking_uri, tmp_path / "models")


def test_versions_left_for_later_are_read_back_so_another_process_delivering_them_makes_no_duplicates(
        tmp_path, platform):
    """The agent's publish runs out of max_seconds; `mlma mlflow sync` then delivers the rest; the agent's next
    publish delivered them again (its picture of MLflow was kept after a publish that left items)."""
    import time

    config, zones = _started_replica(tmp_path, platform)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        for uid in zones:  # the start-up's versions are in MLflow (the agent mirrored them): new ones
            registry.register(uid, {"refit of": uid}, spec="ridge", promote=True)
        agent = project_sync(config)
        object.__setattr__(agent.settings, "max_seconds", 3.0)
        real = agent.on_version_created

        def slow(version):  # the first delivery outlasts max_seconds: the publish stops after it
            real(version)
            time.sleep(3.5)

        agent.on_version_created = slow
        first = agent.sync(registry)
        assert first.versions == 1 and first.pending == 2 * len(zones) - 1
        assert project_sync(config).sync(registry).pending == 0  # the operator's `mlma mlflow sync`
        agent.on_version_created = real
        assert (agent.sync(registry).versions, agent.sync(registry).versions) == (0, 0)
        in_mlflow, aliases = mlflow_state(agent)  # (it fails on a version that is in MLflow twice)
        assert set(in_mlflow) == {(uid, v) for uid in zones for v in (1, 2)} and set(aliases.values()) == {2}


def test_an_mlflow_server_that_never_answers_does_not_hold_the_tick(tmp_path, platform):
    """A server that accepts connections and never answers held `mlma tick` (and the tick lock) for 4 to 20
    minutes after the tick was done. Now the tick returns after max_seconds (+5 s) and the sync goes on in the
    background; the lock is free once the tick is done."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    root = make_project(tmp_path / "p")
    text = (root / "mlma.toml").read_text().replace('tracking_uri = "sqlite:///mlflow.db"',
                                                    f'tracking_uri = "http://127.0.0.1:{listener.getsockname()[1]}"')
    (root / "mlma.toml").write_text(text + "max_seconds = 2\n")
    config = load_config(root)
    frame = platform[platform["ds"] < platform["ds"].min() + pd.Timedelta(days=FIRST_TICK)]
    try:
        with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
            store.ingest_frame(frame, "history")
            holders = []
            sync = live.mlflow.sync
            live.mlflow.sync = lambda registry: (holders.append(store.lock_holder()), sync(registry))
            started = time.monotonic()
            live.step()
            took = time.monotonic() - started
        assert holders == [None]  # the mirror runs once the tick lock is released
        # max_seconds (2) + 5 s for the sync, and the tick itself (about a second here; a loaded machine slower)
        assert took < 15, f"the tick took {took:.0f} s with max_seconds = 2"
    finally:
        listener.close()


def test_an_alias_moved_or_deleted_by_hand_in_mlflow_is_put_back(tmp_path, platform):
    """A person moved one stream's champion alias in MLflow and deleted another's: mlma's own tag still said
    the champion was delivered, and the alias stayed wrong for good."""
    config, zones = _started_replica(tmp_path, platform)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        for uid in zones[:2]:
            registry.register(uid, {"refit of": uid}, spec="ridge", promote=True)
        sync = project_sync(config)
        assert sync.sync(registry).champions == 2
        moved, deleted = (registered_name("mlma.", uid) for uid in zones[:2])
        sync.client.set_registered_model_alias(moved, "champion", "1")
        sync.client.delete_registered_model_alias(deleted, "champion")
        fresh = project_sync(config)  # a process that reads MLflow back (the next start, or after an error)
        assert fresh.sync(registry).champions == 2
        _, aliases = mlflow_state(fresh)
        assert aliases[zones[0]] == aliases[zones[1]] == 2


def test_a_champion_version_deleted_in_mlflow_is_logged_again_when_the_alias_needs_it(tmp_path, platform):
    """A person cleaning up old versions in MLflow deleted the champion's version of three streams: the alias
    could never be set again ("not in MLflow yet" at every publish), and those three failing first stopped every
    publish, so the other streams were never mirrored again (after a read-back and with a process's warm view)."""
    config, zones = _started_replica(tmp_path, platform)
    cleaned, later = zones[:3], zones[3:6]
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        for uid in zones:  # rejected challengers: version 1 serves on
            registry.register(uid, {"refit of": uid}, spec="ridge")
        sync = project_sync(config)
        assert sync.sync(registry).versions == len(zones)
        for uid in cleaned:
            sync.client.delete_model_version(registered_name("mlma.", uid), "1")
        for uid in zones:
            registry.register(uid, {"third of": uid}, spec="ridge")
        report = project_sync(config).sync(registry)  # a process that reads MLflow back
        assert (report.error, report.pending) == (None, 0), report
        # (version 1 of the cleaned streams is logged again by the alias's delivery, not counted as a version)
        assert (report.versions, report.champions) == (len(zones), len(cleaned))
        in_mlflow, aliases = mlflow_state(sync)
        assert set(in_mlflow) == {(uid, v) for uid in zones for v in (1, 2, 3)}
        assert aliases == {uid: 1 for uid in zones}
        # A process whose view is warm: all promoted, then version 1 deleted in MLflow, then rolled back to it.
        for uid in zones:
            registry.promote(uid, 2, by="agent")
        assert sync.sync(registry).champions == len(zones)
        for uid in later:
            sync.client.delete_model_version(registered_name("mlma.", uid), in_mlflow[(uid, 1)].version)
            registry.rollback(uid, 1, by="user:ana", reason="test")
        report = sync.sync(registry)
        assert (report.error, report.champions) == (None, len(later)), report
        in_mlflow, aliases = mlflow_state(sync)
        assert set(in_mlflow) == {(uid, v) for uid in zones for v in (1, 2, 3)}
        assert aliases == {uid: 1 if uid in later else 2 for uid in zones}


def test_streams_mlflow_refuses_do_not_stop_the_mirror_but_a_server_that_fails_does(tmp_path, platform):
    """MLflow's answer "does not exist" for the first three streams (their registered models deleted by a
    person) was taken for the server being down: the publish stopped there, and the other streams waited."""
    from mlflow.exceptions import MlflowException

    config, zones = _started_replica(tmp_path, platform)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        sync = project_sync(config)
        assert sync.sync(registry).error is None  # its view of MLflow is warm
        for uid in zones[:3]:
            sync.client.delete_registered_model(registered_name("mlma.", uid))
        for uid in zones:
            registry.register(uid, {"refit of": uid}, spec="ridge", promote=True)
        report = sync.sync(registry)
        assert report.failed_streams == 3 and "RESOURCE_DOES_NOT_EXIST" in report.error, report
        assert (report.versions, report.champions) == (len(zones) - 3, len(zones) - 3)
        assert sync.sync(registry).pending == 0  # read back: those registered models are made again
        # A server that fails (no answer about the stream) still stops the publish after three streams.
        for uid in zones:
            registry.register(uid, {"third of": uid}, spec="ridge")

        def unreachable(*args, **kwargs):
            raise MlflowException("API request to http://mlflow:5000/api/2.0/mlflow/runs/create failed with "
                                  "exception ConnectionError")

        sync.client.create_run = unreachable
        report = sync.sync(registry)
        assert (report.failed_streams, report.versions, report.pending) == (3, 0, len(zones)), report


def test_a_malformed_mlma_tag_in_mlflow_is_skipped_with_a_warning_naming_it(tmp_path, platform, caplog):
    """One hand-edited tag (mlma.version = 'one') stopped the whole mirror with "invalid literal for int()",
    naming neither the model nor the tag."""
    config, zones = _started_replica(tmp_path, platform)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        sync = project_sync(config)
        edited_version, edited_champion = (registered_name("mlma.", uid) for uid in zones[:2])
        sync.client.set_model_version_tag(edited_version, "1", "mlma.version", "one")
        sync.client.set_registered_model_tag(edited_champion, "mlma.champion", "first")
        for uid in zones:
            registry.register(uid, {"refit of": uid}, spec="ridge", promote=True)
        report = project_sync(config).sync(registry)  # a process that reads MLflow back
    # (the edited one is not taken for mlma's version 1, which is logged again)
    assert (report.error, report.pending, report.versions) == (None, 0, len(zones) + 1), report
    assert f"model version 1 of {edited_version!r} has the tag mlma.version='one'" in caplog.text
    assert f"registered model {edited_champion!r} has the tag mlma.champion='first'" in caplog.text
    client = sync.client
    assert {int(client.get_model_version_by_alias(registered_name("mlma.", uid), "champion").tags["mlma.version"])
            for uid in zones} == {2}
    assert client.get_registered_model(edited_champion).tags["mlma.champion"] == "2"


@pytest.mark.parametrize("server_filters_tags", [True, False])
def test_a_version_another_process_logged_since_the_agent_read_mlflow_is_not_logged_twice(tmp_path, platform,
                                                                                          server_filters_tags):
    """A person registered a version and ran `mlma mlflow sync`; the running agent, whose view of MLflow was
    warm, logged it a second time at its next publish. (Also against a server that searches model versions by
    name only, as older MLflow servers do.)"""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    config, zones = _started_replica(tmp_path, platform)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        agent = project_sync(config)
        if not server_filters_tags:
            search = agent.client.search_model_versions

            def by_name_only(query, *args, **kwargs):
                if "tags." in query:
                    raise MlflowException("Invalid attribute key 'tags.mlma.version'",
                                          error_code=INVALID_PARAMETER_VALUE)
                return search(query, *args, **kwargs)

            agent.client.search_model_versions = by_name_only
        assert agent.sync(registry).error is None
        registry.register(zones[0], {"by hand": 1}, spec="ridge", promote=True)
        assert project_sync(config).sync(registry).versions == 1  # the person's `mlma mlflow sync`
        report = agent.sync(registry)
        assert (report.error, report.versions, report.champions) == (None, 1, 1), report  # found, not logged
        in_mlflow, aliases = mlflow_state(agent)  # (it fails on a version that is in MLflow twice)
        assert (zones[0], 2) in in_mlflow and aliases[zones[0]] == 2
        # Found by asking MLflow first: no second run logged (not even one deleted afterwards).
        runs = agent.client.search_runs([agent._experiment()], filter_string=f"tags.`mlma.unique_id` = '{zones[0]}' "
                                        "and tags.`mlma.version` = '2'", run_view_type=ViewType.ALL)
        assert len(runs) == 1


def test_two_processes_logging_one_version_at_once_keep_one_of_it(tmp_path, platform):
    """`mlma mlflow sync` and the agent's publish at once: both asked MLflow, found nothing, and logged every
    new version, each one twice. The later MLflow version now gives way to the first."""
    config, zones = _started_replica(tmp_path, platform)
    with Store.open(config.store_url) as store, Store.open(config.store_url) as other_store:
        registry = ModelRegistry(store, config.artifacts_dir)
        for uid in zones:
            registry.register(uid, {"refit of": uid}, spec="ridge", promote=True)
        agent, person = project_sync(config), project_sync(config)
        asked = agent._held_number
        raced = []

        def ask_then_race(name, unique_id, version):
            found = asked(name, unique_id, version)
            if not raced:  # right after the agent asked about its first version, the other process logs it all
                raced.append(person.sync(ModelRegistry(other_store, config.artifacts_dir)))
            return found

        agent._held_number = ask_then_race
        report = agent.sync(registry)
        assert raced[0].versions == len(zones) and (report.error, report.pending) == (None, 0), (raced, report)
        in_mlflow, aliases = mlflow_state(agent)  # (it fails on a version that is in MLflow twice)
        assert set(in_mlflow) == {(uid, v) for uid in zones for v in (1, 2)} and set(aliases.values()) == {2}
        runs = agent.client.search_runs([agent._experiment()], filter_string=f"tags.`mlma.unique_id` = '{zones[0]}' "
                                                                           "and tags.`mlma.version` = '2'",
                                        run_view_type=ViewType.ALL)  # the run of the version that gave way: deleted
        assert sorted(run.info.lifecycle_stage for run in runs) == ["active", "deleted"]


def test_init_checks_and_escapes_the_mlflow_uri_before_making_the_project(tmp_path):
    """`mlma init --mlflow-uri ./mlruns` made a project no command could load (and `init` again refused: it
    existed); a URI with a quote was written into mlma.toml as is, which was then not TOML."""
    from typer.testing import CliRunner

    from mlma.cli import app

    result = CliRunner().invoke(app, ["init", str(tmp_path / "rel"), "--model", "ridge", "--mlflow-uri", "./mlruns"])
    assert result.exit_code == 2 and "tracking_uri must be a URI" in " ".join(result.output.split())
    assert not (tmp_path / "rel").exists()
    odd = tmp_path / 'say "hi" \\ there'
    odd.mkdir()
    uri = f"sqlite:///{odd}/mlflow.db"
    result = CliRunner().invoke(app, ["init", str(tmp_path / "ok"), "--model", "ridge", "--mlflow-uri", uri])
    assert result.exit_code == 0, result.output
    settings = load_config(tmp_path / "ok").mlflow
    assert (settings.tracking_uri, settings.model_prefix, settings.experiment) == (uri, "ok.", "ok")


def test_a_project_made_from_mlflow_has_registered_models_of_its_own(tmp_path):
    """`mlma init --from-mlflow` wrote the default prefix: in the source project's tracking store the new project
    took the source's versions for its own (its first version was "already in MLflow") and moved the source's
    champion alias onto its own models."""
    from typer.testing import CliRunner

    from mlma.cli import app

    source = load_config(make_project(tmp_path / "source"))
    ctx = ForecastContext("h", season_length=24, horizon=24)
    ds = np.arange("2024-01-01", "2024-02-01", dtype="datetime64[h]").astype("datetime64[ns]")
    fitted = make_forecaster("ridge", ctx).fit(ds, 50 + 10 * np.sin(2 * np.pi * np.arange(ds.size) / 24))
    with Store.open(source.store_url) as store:
        registry = ModelRegistry(store, source.artifacts_dir)
        registry.register(int(store.stream_ids(["zone-9"])[0]), fitted, spec="ridge", promote=True)
        assert project_sync(source).sync(registry).error is None
    # A folder named like the default prefix, which the source project uses in that store.
    result = CliRunner().invoke(app, ["init", str(tmp_path / "mlma"), "--from-mlflow", "models:/mlma.zone-9@champion",
                                      "--mlflow-uri", source.mlflow.tracking_uri])
    assert result.exit_code == 0, result.output
    new = load_config(tmp_path / "mlma")
    assert (new.mlflow.model_prefix, new.mlflow.experiment) == ("mlma-2.", "mlma-2")
    with Store.open(new.store_url) as store:
        registry = ModelRegistry(store, new.artifacts_dir)
        registry.register(int(store.stream_ids(["zone-9"])[0]), fitted, spec=new.model.spec, promote=True)
        report = project_sync(new).sync(registry)
    assert (report.error, report.versions, report.champions) == (None, 1, 1), report
    client = project_sync(source).client
    assert client.get_model_version_by_alias("mlma-2.zone-9", "champion").tags["mlma.version"] == "1"
    ours = client.search_model_versions("name = 'mlma.zone-9'")
    assert len(ours) == 1 and client.get_registered_model("mlma.zone-9").aliases == {"champion": 1}


def test_an_alias_or_experiment_longer_than_mlflow_keeps_is_refused_when_the_project_loads(tmp_path):
    """An alias of 256 characters or an experiment name of 501 passed the load, then every publish failed
    (after the versions were logged, for the alias) with MLflow's "exceeds the maximum length", at every sync.
    MLflow's own limits: the longest it keeps publish."""
    root = make_project(tmp_path / "p")
    base = (root / "mlma.toml").read_text()
    (root / "mlma.toml").write_text(base.replace('experiment = "zones"', f'experiment = "{"e" * 500}"\n'
                                                f'alias = "{"a" * 255}"'))
    config = load_config(root)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    ds = np.arange("2024-01-01", "2024-01-15", dtype="datetime64[h]").astype("datetime64[ns]")
    with Store.open(config.store_url) as store:
        store.ingest_frame(pd.DataFrame({"unique_id": "zone-1", "ds": ds, "y": np.arange(ds.size, dtype=float)}),
                           "day-0")
        registry = ModelRegistry(store, config.artifacts_dir)
        registry.register(int(store.stream_ids(["zone-1"])[0]),
                          make_forecaster("seasonal-naive", ctx).fit(ds, np.ones(ds.size)), spec="seasonal-naive",
                          promote=True)
        report = project_sync(config).sync(registry)
    assert report.error is None and report.versions == 1 and report.champions == 1, report
    for key, value in (("alias", "a" * 256), ("experiment", "e" * 501)):
        (root / "mlma.toml").write_text(base + f'{key} = "{value}"\n' if key == "alias"
                                        else base.replace('experiment = "zones"', f'experiment = "{value}"'))
        with pytest.raises(ConfigError, match=rf"\[mlflow\] {key} may have at most \d+ characters"):
            load_config(root)
