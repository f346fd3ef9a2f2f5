"""The ``mlma`` command line: simulate, validate, backtest, demo, datasets."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table

#: Exit codes of every command (docs/operations.md): 0 done, 2 bad input or usage, 3 no tick due, 4 the store
#: is locked by another process, 5 the store cannot be used now (unreachable, read-only, disk full, damaged).
EXIT_LOCKED = 4
EXIT_STORE = 5

if TYPE_CHECKING:  # the commands import what they need inside their functions
    from mlma.live import LateActuals


class _App(typer.Typer):
    """The command line app; faults of the store and its disk end in one line naming them and a documented
    exit code instead of a traceback (set ``MLMA_TRACEBACK=1`` to see the traceback as well)."""

    def __call__(self, *args, **kwargs):
        import os
        import sys

        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - unknown errors are re-raised with their traceback
            known = store_failure(exc)
            if known is None or os.environ.get("MLMA_TRACEBACK"):
                raise
            code, message = known
            print(f"error: {message}", file=sys.stderr)
            sys.exit(code)


def store_failure(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and a one-line message for a failure of the store or its disk, or None for other errors."""
    import errno
    import sqlite3

    from mlma.store.errors import LockHeld, LockLost, SchemaError, StateCorrupted

    seen = set()
    chain = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    for error in chain:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if isinstance(error, LockHeld):
            return EXIT_LOCKED, first
        if isinstance(error, LockLost):  # its lease expired (the process stalled) or a person broke the lock
            return EXIT_LOCKED, (f"{first.rstrip('.')}: the tick it was running was not committed (ticks it "
                                 "finished before were); the next run does that tick again")
        if isinstance(error, (StateCorrupted, SchemaError)):
            return EXIT_STORE, first
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            where = f" writing {error.filename}" if error.filename else ""
            return EXIT_STORE, (f"no space left on the device{where}: nothing was changed; free some space and run "
                                "the command again")
        if isinstance(error, OSError) and error.errno == errno.EROFS:
            return EXIT_STORE, f"read-only file system ({error.filename or first}): this command writes"
        if isinstance(error, sqlite3.OperationalError):
            text = first.lower()
            if "locked" in text:
                return EXIT_LOCKED, ("the SQLite store is locked by another process (mlma waited for its write "
                                     f"lock and gave up: {first}); run the command again when that process is done")
            if "disk is full" in text:
                return EXIT_STORE, ("no space left on the device of the SQLite store: nothing was changed (the "
                                    "transaction was rolled back); free some space and run the command again")
            if "readonly" in text or "read-only" in text:
                return EXIT_STORE, ("the SQLite store is read-only (a read-only file system or no write "
                                    "permission): this command writes; status, forecast and audit still work")
            if "unable to open" in text:
                return EXIT_STORE, f"cannot open the SQLite store: {first}"
    for error in chain:
        # psycopg's OperationalError: the server is unreachable, the connection broke or a timeout fired.
        if type(error).__module__.startswith("psycopg") and any(
                c.__name__ == "OperationalError" for c in type(error).__mro__):
            return EXIT_STORE, f"the PostgreSQL store cannot be used now: {str(error).strip().splitlines()[0]}"
    return None


app = _App(help="mlma: the Machine Learning Monitoring Agent.", no_args_is_help=True,
           pretty_exceptions_show_locals=False)
console = Console()
if not console.is_terminal:
    # Logs and CI capture output without a terminal; keep the results table on one line per policy.
    console.width = 140


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception, so that a tick it stops ends as on Ctrl-C: the pool killed, the tick's row
    marked stopped, the lock released, so that the next agent (another pod too) need not wait out the lease."""


EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise Terminated("SIGTERM")


def _fail(message: str) -> None:
    from rich.markup import escape

    # Messages are plain text: "[nixtla]" in "pip install 'mlma[nixtla]'" is not markup.
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)


@app.command()
def simulate(
    zones: int = typer.Option(200, help="Number of delivery zones (streams)."),
    days: int = typer.Option(84, help="Days of hourly data."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same platform."),
    cities: Optional[int] = typer.Option(None, help="Number of cities (default grows with zones)."),
    out: Path = typer.Option(..., help="Output file, .csv or .parquet; events and streams are written beside it."),
    drivers: bool = typer.Option(False, help="Simulate weather that moves demand and add the driver columns "
                                 "temperature, rain and campaign (docs/simulator.md)."),
    campaign_driver: str = typer.Option("planned", help="With --drivers, what the campaign column announces: "
                                        "'planned' (the campaigns' planned uplift, summed when they overlap) "
                                        "or 'flag' (1 while any runs, as before)."),
) -> None:
    """Simulate a last-mile delivery platform with ground-truth events."""
    from mlma.simulate import simulate_platform, write_simulation

    if out.suffix.lower() not in (".csv", ".parquet"):
        _fail(f"--out must end in .csv or .parquet, got {out.name!r}")
    if campaign_driver != "planned" and not drivers:  # it was ignored: the data had no campaign column at all
        _fail(f"--campaign-driver {campaign_driver} needs --drivers (the campaign column is a driver)")
    try:
        sim = simulate_platform(zones, days, seed, n_cities=cities, drivers=drivers, campaign_driver=campaign_driver)
        write_simulation(sim, out)
    except ValueError as exc:
        _fail(str(exc))
    except OSError as exc:  # a folder that is a file, no permission: said, as `mlma backtest --out` says it
        _fail(f"cannot write {out}: {exc}")
    console.print(f"wrote {len(sim.data):,} rows of {zones:,} zones and {sim.events['event_id'].nunique():,} "
                  f"events to {out}")


def _unreadable(data: Path, exc: Exception) -> str:
    """A reader's error (pandas' parser, pyarrow, the file system) as a message that names the file."""
    text = str(exc).strip() or type(exc).__name__
    return text if str(data) in text else f"cannot read {data}: {text}"


@app.command("validate")
def validate_command(
    data: Path = typer.Argument(..., help="Long-format CSV or Parquet file."),
    id_col: str = typer.Option("unique_id", help="Column naming the stream."),
    time_col: str = typer.Option("ds", help="Timestamp column."),
    target_col: str = typer.Option("y", help="Target column."),
    freq: Optional[str] = typer.Option(None, help="Frequency alias (inferred if omitted)."),
) -> None:
    """Check a data file against the data contract and print what would be repaired or dropped."""
    from mlma.data import DataError, read_frame, validate

    if data.is_dir() and data.suffix.lower() not in (".parquet", ".pq"):
        _fail(f"{data} is a folder; give a CSV or Parquet file (or a Parquet dataset folder named *.parquet)")
    try:
        checked = validate(read_frame(data, id_col=id_col, time_col=time_col, target_col=target_col),
                           freq=freq, source=str(data), on_bad_rows="drop")
    except DataError as exc:
        _fail(str(exc))
    except (ValueError, OSError) as exc:  # unreadable (a parser's or pyarrow's error), or a bad --freq
        _fail(_unreadable(data, exc))
    console.print(str(checked.report))
    console.print(f"frequency: {checked.freq.alias} (season length {checked.freq.season_length}), "
                  f"{checked.frame['unique_id'].nunique():,} streams, {len(checked.frame):,} rows")


@app.command()
def backtest(
    data: Optional[Path] = typer.Option(None, help="Long-format CSV or Parquet file (or --project)."),
    project: Optional[Path] = typer.Option(None, "--project", help="Instead of --data: a project's own stored "
                                           "history, replayed with its mlma.toml (clock, model, window, drivers, "
                                           "policy) and its streams' attributes and abnormal periods."),
    sample: Optional[int] = typer.Option(None, min=1, help="With --project: replay this many streams drawn at "
                                         "random (seed 0), for a large fleet."),
    policies: Optional[str] = typer.Option(None, help="Comma-separated policies: never, periodic:K "
                                           "(staggered), periodic:K:sync, always, mlma, adwin, page-hinkley; "
                                           "settings as name:key=value, e.g. mlma:alpha=0.1, adwin:delta=0.01; "
                                           "with --project, 'project' is the project's own policy. Default: "
                                           "never,periodic:7,always, or project with --project."),
    out: Path = typer.Option(Path("backtest-output"), help="Folder for summary.json, CSVs and report.html."),
    frontier: bool = typer.Option(True, help="Also run the schedules of the frontier (never, staggered "
                                  "periodic:K over a range of K, always) and give each policy its gap to it."),
    bootstrap: int = typer.Option(1000, help="Bootstrap replicates (resampling streams) for the gap's 95 % "
                                  "interval; 0 for none."),
    sweep: Optional[list[str]] = typer.Option(None, help="A grid of settings to add to the policies, e.g. "
                                              "'adwin:delta=0.001,0.01,0.1' (every combination of the values); "
                                              "repeat for several."),
    fit_cache: Optional[Path] = typer.Option(None, help="Folder of fitted models kept across runs: later runs "
                                             "on the same data fit only what is new."),
    model: Optional[str] = typer.Option(None, help="seasonal-naive | ridge | lightgbm | package.module:Class "
                                        "(default lightgbm, or the project's)."),
    freq: Optional[str] = typer.Option(None, help="Frequency alias, e.g. h, 30min, D, MS (inferred)."),
    tick: Optional[str] = typer.Option(None, help="Tick length, e.g. 1D, 7D, 12MS (inferred)."),
    horizon: Optional[int] = typer.Option(None, help="Steps per tick, instead of --tick."),
    train_window: Optional[int] = typer.Option(None, help="Training window in ticks (default by frequency)."),
    initial_ticks: Optional[int] = typer.Option(None, help="Ticks of history before scoring starts."),
    executor: Optional[str] = typer.Option(None, help="inline | process[:N] | dask://host:port"),
    fit_timeout: Optional[float] = typer.Option(None, min=0, max=30 * 86_400, help="Seconds a tick's re-trainings "
                                                "may take; the fits not back by then fail (their streams keep "
                                                "their models), as [agent] fit_timeout_seconds does live. Needs "
                                                "--executor process[:N] or dask://host:port."),
    events: Optional[Path] = typer.Option(None, help="Ground-truth events file (default: the simulator's "
                                          "<stem>.events.csv beside the data, if present)."),
    abnormal: Optional[Path] = typer.Option(None, help="CSV of periods marked abnormal (start, end, optional "
                                            "unique_id): kept out of training and references."),
    id_col: str = typer.Option("unique_id", help="Column naming the stream."),
    time_col: str = typer.Option("ds", help="Timestamp column."),
    target_col: str = typer.Option("y", help="Target column."),
    drivers: str = typer.Option("", help="Comma-separated future drivers: columns whose values are known in "
                                "advance (weather forecast, planned campaign), fed to the models at the forecast "
                                "time (docs/models.md)."),
    historical_drivers: str = typer.Option("", help="Comma-separated historical drivers: columns observed only "
                                           "up to the forecast origin, fed as lagged values."),
    event_drivers: str = typer.Option("", help="Comma-separated future drivers that mark events (0 when none "
                                      "runs, e.g. a campaign flag): the monitor discounts the level change the "
                                      "model attributes to them (docs/monitoring.md)."),
    attributes: Optional[Path] = typer.Option(None, help="CSV or Parquet file of the streams' attributes (the id "
                                              "column and one column per attribute, as for `mlma attributes`); "
                                              "default: the simulator's <stem>.streams.csv beside the data, if "
                                              "present."),
    group_by: str = typer.Option("city", help="Attribute that groups escalations into the items of the "
                                 "engineer's queue, as `mlma serve --group-by` does; the labour is also counted "
                                 "in those items. '' for kind and tick only."),
) -> None:
    """Replay a data set tick by tick under several re-training policies and report the results; with
    --project, a project's own history under its settings, against the schedules at equal compute."""
    from mlma.backtest import BacktestConfig, check_output_dir, read_abnormal_periods, run_backtest, write_outputs
    from mlma.data import DataError
    from mlma.models import Drivers
    from mlma.policy import expand_grid
    from mlma.simulate import read_events, read_events_file, sidecar_path

    if (data is None) == (project is None):
        _fail("give one of --data FILE or --project FOLDER (a project's own history)")
    # An empty value is no choice: --policies "" ran the defaults, --fit-cache "" used the current folder.
    if policies is not None and not policies.strip():
        _fail("--policies is empty; name at least one policy (e.g. never,periodic:7,always,mlma), or leave the "
              "option out for the default")
    if fit_cache is not None and str(fit_cache).strip() in ("", "."):  # Path("") is the current folder
        _fail("--fit-cache names no folder of its own (empty, or the current folder); give one (e.g. "
              ".mlma-fits), or leave the option out")
    if str(out).strip() in ("", "."):  # Path("") is the current folder: --out "" wrote the outputs there
        _fail("--out names no folder of its own (empty, or the current folder); give one (e.g. backtest-output)")
    try:
        check_output_dir(out)  # the outputs are written at the end: a bad --out must not cost the replay
    except ValueError as exc:
        _fail(str(exc))
    if project is not None:
        given = [name for name, value in (("--freq", freq), ("--tick", tick), ("--horizon", horizon),
                                          ("--events", events), ("--abnormal", abnormal),
                                          ("--attributes", attributes), ("--drivers", drivers),
                                          ("--historical-drivers", historical_drivers),
                                          ("--event-drivers", event_drivers))
                 if value] + [name for name, value, default in (("--id-col", id_col, "unique_id"),
                                                                ("--time-col", time_col, "ds"),
                                                                ("--target-col", target_col, "y"))
                              if value != default]
        if given:
            _fail(f"{', '.join(given)}: with --project the data, its clock, drivers, attributes and abnormal "
                  "periods are the project's (mlma.toml and its store)")
    elif sample is not None:
        _fail("--sample goes with --project (draw from a file yourself)")
    try:
        if project is not None:
            project_config = _project(project)
            history = _project_history(project_config, sample, model)
            settings = dict(history.settings)
            model = settings.pop("model")
            if train_window is not None:
                settings["train_window_ticks"] = train_window
            source, label = history.data, f"project {project_config.root.name}"
            truth, streams, marked = None, history.attributes, history.abnormal
            wanted = [p.strip() for p in (policies or "project").split(",") if p.strip()]
            specs = list(dict.fromkeys(history.policy if p == "project" else p for p in wanted))
        else:
            model = model or "lightgbm"
            settings = dict(freq=freq, tick=tick, horizon=horizon, train_window_ticks=train_window,
                            drivers=Drivers(future=drivers, historical=historical_drivers, events=event_drivers))
            source, label = data, data.name
            truth = _side_file(events or f"the events file beside {data}", "events",
                               lambda: read_events_file(events) if events else read_events(data))
            # The streams table beside the data (the simulator's, or a user's) holds attributes of any names: it
            # is read as --attributes is, not as the simulator's own schema (which refused a user's table).
            beside = sidecar_path(data, "streams")
            streams = (_read_attributes(attributes) if attributes is not None
                       else _read_attributes(beside) if beside.exists() else None)
            # Read and checked before the replay: ids as text ("007" is not "7"; empty: the whole fleet), times as
            # a data file's (ISO 8601, never guessed); a refusal names the file, row and column.
            marked = read_abnormal_periods(abnormal) if abnormal else None
            specs = [p.strip() for p in (policies or "never,periodic:7,always").split(",") if p.strip()]
        for grid in sweep or []:
            specs += [spec for spec in expand_grid(grid) if spec not in specs]
        config = BacktestConfig(policies=specs, model=model, initial_ticks=initial_ticks, executor=executor,
                                fit_timeout=fit_timeout, title=f"backtest of {label}", frontier=frontier,
                                bootstrap=bootstrap, fit_cache=fit_cache, group_by=group_by.strip() or None,
                                **settings)
        started = time.perf_counter()
        result = run_backtest(source, config, events=truth, abnormal=marked, attributes=streams, progress=True,
                              id_col=id_col, time_col=time_col, target_col=target_col)
    except (DataError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        # Said, not Typer's silent exit 130: the outputs are written only at the end.
        kept = f"; the fits already in {fit_cache} are kept for the next run" if fit_cache is not None else ""
        console.print(f"interrupted: the backtest stopped before its end and wrote nothing to {out}{kept}",
                      highlight=False)
        raise typer.Exit(code=130)
    try:
        write_outputs(result, out)
    except (ValueError, OSError) as exc:  # checked before the replay, but a disk can fill or a folder go
        _fail(f"cannot write the backtest's outputs to {out}: {exc}")
    print_summary(result, title=f"{label}: {result.config['n_streams']:,} streams, model {model}")
    _say_dropped_rows(result.validation, out)
    fell_back = result.config["fits_fell_back"]
    if fell_back:
        fits = result.config["fits_done"] + result.config["fits_from_cache"]
        causes = ", ".join(f"{cause} {n:,}" for cause, n in sorted(fell_back.items(), key=lambda kv: -kv[1]))
        # The agent refuses one kind only (Agent.step): a re-training whose own fit failed, where a real model serves.
        kept = (f", except re-trainings whose own fit failed where a {model} model served: those failed, and that "
                "model served on" if "fit failed" in fell_back else "")
        console.print(f"{sum(fell_back.values()):,} of {fits:,} fits fell back to a simpler model ({causes}): "
                      f"those streams were forecast by seasonal naive or the mean, not {model}{kept} "
                      "(docs/models.md)")
    _say_failures(result.summary, result.config["n_streams"])
    scored = _say_unscored(result.per_stream, result.summary, result.config["n_streams"])
    from mlma.backtest import driver_gaps_message

    for name, gap in result.config["streams_without_drivers"].items():  # an empty column is not left unsaid
        console.print(f"warning: {driver_gaps_message(name, gap, result.config['n_streams'])}", style="yellow",
                      markup=False, highlight=False)
    cached = (f", {result.config['fits_from_cache']:,} from the fit cache" if fit_cache is not None else "")
    console.print(f"done in {time.perf_counter() - started:.1f} s ({result.config['fits_done']:,} fits{cached}); "
                  f"wrote {out}/summary.json and {out}/report.html")
    if not scored:
        raise typer.Exit(code=2)


def _say_dropped_rows(findings, out: Path) -> None:
    """Rows of the data the backtest left out (bad rows are dropped, as ingest drops them): said, by reason,
    since its table covers only the rest (validation.csv lists the findings)."""
    from rich.markup import escape

    if findings is None or not len(findings):
        return
    dropped = findings[findings["severity"] == "dropped"]
    if len(dropped):
        by_code = dropped.groupby("code")["n_rows"].sum().sort_values(ascending=False)
        console.print(escape(f"warning: {int(by_code.sum()):,} row(s) of the data were dropped and left out of the "
                             "backtest (" + ", ".join(f"{code} {int(n):,}" for code, n in by_code.items())
                             + f"): {out}/validation.csv says which and why"))


def _say_failures(summary: list[dict], n_streams: int) -> None:
    """A model whose fits or forecasts failed leaves streams (or ticks) unscored, and an MAE over fewer streams
    can look better: say so, per policy, instead of leaving it to summary.json."""
    from rich.markup import escape

    for row in summary:
        refits = row.get("failed_refits", 0)
        fits, forecasts = row.get("fit_failures", 0) - refits, row.get("forecast_failures", 0)
        if fits or forecasts:
            console.print(escape(
                f"warning: {row['policy']}: {fits:,} fit(s) of streams without a model yet and {forecasts:,} "
                f"forecast(s) failed: the ticks they cost were not scored ({row['n_streams']:,} of "
                f"{n_streams:,} streams were scored at all; per_stream.csv: n_scored), so its MAE leaves them out "
                "(why: the escalations, docs/models.md)"), style="yellow", highlight=False)
        if refits:
            console.print(escape(
                f"note: {row['policy']}: {refits:,} fit(s) of streams that had a model failed (re-trainings, "
                "retries of a fall-back); each stream's model stayed and forecast on (retrains.csv: outcome "
                "failed; why: the escalations, docs/models.md)"), highlight=False)


def _say_unscored(per_stream, summary: list[dict], n_streams: int) -> bool:
    """Streams that no policy scored at all (a history that ends before a first model could forecast it, every
    point marked abnormal) count in no MAE: said, since the header names every stream. Returns whether any
    point was scored; when none was, that is an error (every MAE is empty: nothing was compared)."""
    scored = int(per_stream.loc[per_stream["n_scored"] > 0, "unique_id"].nunique()) if len(per_stream) else 0
    if scored == 0:
        console.print(f"error: no point of the data was scored, under any policy, in any of the {n_streams:,} "
                      "streams (each history ends before a first model could forecast it, or every point is "
                      "marked abnormal): there is nothing to compare; per_stream.csv: n_scored", style="red",
                      markup=False, highlight=False)
        return False
    failed = any(row.get("fit_failures", 0) - row.get("failed_refits", 0) or row.get("forecast_failures", 0)
                 for row in summary)
    if scored < n_streams and not failed:  # else _say_failures said it, with the failures
        console.print(f"warning: {n_streams - scored:,} of the {n_streams:,} streams were never scored, under any "
                      f"policy (a history that ends before a first model could forecast it, or points marked "
                      f"abnormal): every MAE is over the other {scored:,}; per_stream.csv: n_scored",
                      style="yellow", markup=False, highlight=False)
    return True


def _project_history(config, sample: Optional[int], model: Optional[str]):
    """``mlma backtest --project``'s input: the project's history and settings (:meth:`LiveAgent.history`)."""
    from mlma.live import LiveAgent, NotReady
    from mlma.project import ConfigError

    try:
        with LiveAgent(config, executor="inline") as live:
            return live.history(sample=sample, model=model)
    except (NotReady, ConfigError) as exc:
        _fail(str(exc))


@app.command()
def demo(
    zones: int = typer.Option(200, help="Zones of the simulated platform."),
    days: int = typer.Option(84, help="Days of hourly data."),
    seed: int = typer.Option(7, help="Random seed."),
    model: str = typer.Option("ridge", help="Model of every zone."),
    policies: str = typer.Option("never,periodic:7,always,mlma,adwin,page-hinkley",
                                 help="Policies to compare."),
    out: Path = typer.Option(Path("demo-output"), help="Output folder."),
    live: bool = typer.Option(True, help="Also replay the platform through the live agent into a project "
                                         "(demo-output/project) for the dashboard."),
    serve: Optional[bool] = typer.Option(None, help="Start the dashboard at the end (default: when run from a "
                                                    "terminal)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Dashboard port."),
) -> None:
    """Simulate a delivery platform, backtest the policies on it, print the table and write the report; then
    run the live agent over the same data and show its fleet on the dashboard."""
    import sys

    from mlma.backtest import BacktestConfig, run_backtest, write_outputs
    from mlma.simulate import simulate_platform, write_simulation

    out.mkdir(parents=True, exist_ok=True)
    console.print(f"simulating {zones} zones x {days} days of hourly orders (seed {seed}) ...")
    sim = simulate_platform(zones, days, seed)
    data_path = out / "platform.parquet"
    write_simulation(sim, data_path)
    config = BacktestConfig(policies=[p.strip() for p in policies.split(",")], model=model,
                            title=f"demo: {zones} zones x {days} days, model {model}", frontier=True)
    started = time.perf_counter()
    result = run_backtest(sim.data, config, events=sim.events, attributes=sim.streams, progress=True)
    result.config["source"] = str(data_path)
    write_outputs(result, out)
    print_summary(result, title=config.title)
    console.print(f"backtest took {time.perf_counter() - started:.1f} s; report: {out / 'report.html'}")
    if not live:
        return
    from mlma.demo import build_live_project

    started = time.perf_counter()
    project, token = build_live_project(sim, out / "project", model=model,
                                        first_tick=int(result.config["first_scored_tick"]), progress=True)
    console.print(f"live agent replayed {days} days into {project.root} in {time.perf_counter() - started:.1f} s")
    console.print(f"dashboard: [bold]mlma serve --project {project.root} --port {port}[/], then open "
                  f"http://127.0.0.1:{port}/ and log in with the admin token\n  {token}", highlight=False)
    if serve is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty()
    if serve:
        import uvicorn

        from mlma.api.app import create_app

        uvicorn.run(create_app(project), host="127.0.0.1", port=port, log_level="warning")


def _executor_option(executor: Optional[str]) -> Optional[str]:
    """``--executor`` checked in form before any work (as ``[agent] executor`` is when the project is read)."""
    from mlma.executor_spec import check_executor_spec

    if executor is None:
        return None
    try:
        return check_executor_spec(executor)
    except ValueError as exc:
        _fail(f"--executor: {exc}")


def _project(project: Optional[Path], *, check_values: bool = True):
    from mlma.project import ConfigError, load_config

    try:
        return load_config(project or Path.cwd(), check_values=check_values)
    except ConfigError as exc:
        _fail(str(exc))


@app.command()
def init(
    folder: Path = typer.Argument(..., help="Project folder to create (mlma.toml, the database, artifacts/)."),
    db: Optional[str] = typer.Option(None, help="Store URL; default: a SQLite file in the folder. For a team: "
                                     "postgresql+psycopg://user@host/db"),
    model: str = typer.Option("lightgbm", help="Model of every stream."),
    from_mlflow: Optional[str] = typer.Option(None, help="Start from a model registered in MLflow: "
                                              "models:/NAME/VERSION or models:/NAME@ALIAS (docs/mlflow.md)."),
    mlflow_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI for --from-mlflow; the project "
                                             "mirrors its registry there too."),
    attach: bool = typer.Option(False, "--attach", help="The --db store already holds a project: make this folder "
                                "another front of it (a second machine), instead of refusing."),
) -> None:
    """Create a project: a validated mlma.toml and an up-to-date store (refused on a store that already holds a
    project, unless --attach)."""
    import dataclasses
    import shutil

    from mlma.project import CONFIG_NAME, ConfigError, check_model_spec, init_project

    if from_mlflow is not None and mlflow_uri is None:
        _fail("--from-mlflow needs --mlflow-uri (e.g. sqlite:///mlflow.db)")
    source = ""
    mlflow_settings = None
    # The highest folder the MLflow import creates (the model is copied before the project is made): removed
    # if the project is not made after all.
    models = folder.resolve() / "models"
    created = next((f for f in reversed([models, *models.parents]) if not f.exists()), None)
    if mlflow_uri is not None:
        from mlma.mlflow_sync import free_project_stem, import_model, parse_settings, project_stem

        if (folder / CONFIG_NAME).exists():
            _fail(f"{folder / CONFIG_NAME} exists already; choose a new project folder")
        if mlflow_uri.startswith("sqlite:///") and not mlflow_uri.startswith("sqlite:////"):
            mlflow_uri = "sqlite:///" + str(Path(mlflow_uri[len("sqlite:///"):]).resolve())  # as given, from here
        try:
            # Checked now as loading the project will: a URI it refuses made a project no command could load.
            mlflow_settings = parse_settings({"tracking_uri": mlflow_uri}, root=folder.resolve(),
                                             source="--mlflow-uri")
        except ValueError as exc:
            _fail(str(exc))
        # The project's own registered models and experiment: with the default prefix it would take another
        # project's models in that store (the --from-mlflow model's, say) for its own and move their alias.
        stem = project_stem(folder.resolve())
        try:
            stem = free_project_stem(stem, mlflow_settings.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - the project can still be made; said below
            if from_mlflow is not None:
                _fail(f"MLflow at {mlflow_settings.tracking_uri} cannot be read: {type(exc).__name__}: {exc}")
            console.print(f"note: MLflow at {mlflow_settings.tracking_uri} cannot be read now ({type(exc).__name__}: "
                          f"{exc}); the project's registered models are named {stem}.<unique_id>: if another "
                          "project there uses that prefix, change model_prefix and experiment in mlma.toml",
                          style="yellow", markup=False, highlight=False)
        mlflow_settings = dataclasses.replace(mlflow_settings, experiment=stem, model_prefix=f"{stem}.")
        if from_mlflow is not None:
            try:
                path, source = import_model(from_mlflow, mlflow_settings.tracking_uri, models)
            except ValueError as exc:
                _fail(str(exc))
            model = f"pickle:{path}"
    try:
        # Refused here, naming what is wrong, when no clock could build it (init_project checks it again).
        unchecked = check_model_spec(model)
        config = init_project(folder, db=db, model=model, attach=attach)
    except (ConfigError, ValueError) as exc:
        if source and created is not None:
            shutil.rmtree(created, ignore_errors=True)
        _fail(str(exc))
    if mlflow_settings is not None:
        from mlma.mlflow_sync import settings_toml

        config_file = config.root / CONFIG_NAME
        text = config_file.read_text(encoding="utf-8")
        text += "\n" + settings_toml(mlflow_settings, comment=f"the project started from {source}" if source else None)
        config_file.write_text(text, encoding="utf-8")
    console.print(f"created project {config.root} (store {config.store_url})"
                  + (f", model {source} from MLflow" if source else "")
                  + (f"; mirrored to MLflow as {mlflow_settings.model_prefix}<unique_id>, experiment "
                     f"{mlflow_settings.experiment!r}" if mlflow_settings is not None else ""))
    if unchecked:
        console.print(f"note: model {model!r} could not be checked in this environment ({unchecked}); the "
                      "environment that runs the ticks needs it, or the first tick stops naming it",
                      style="yellow", markup=False, highlight=False)


mlflow_app = typer.Typer(help="The MLflow mirror of the model registry (docs/mlflow.md).", no_args_is_help=True)
app.add_typer(mlflow_app, name="mlflow")


@mlflow_app.command("sync")
def mlflow_sync_command(
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Log the versions and champion moves MLflow does not hold yet (each tick does this too)."""
    from mlma.mlflow_sync import project_sync
    from mlma.registry import ModelRegistry
    from mlma.store import Store

    config = _project(project)
    sync = project_sync(config)
    if sync is None:
        _fail(f"{config.root / 'mlma.toml'} has no [mlflow] section (docs/mlflow.md)")
    with Store.open(config.store_url) as store:
        report = sync.sync(ModelRegistry(store, config.artifacts_dir))
    if report.error is not None:
        failed = (f"{report.failed_streams} stream(s) failed, first {report.error}" if report.failed_streams
                  else report.error)
        _fail(f"MLflow at {config.mlflow.tracking_uri}: {failed} (logged {report.versions} version(s) and "
              f"{report.champions} champion move(s); what failed is offered again by the next sync)")
    console.print(f"MLflow at {config.mlflow.tracking_uri}: logged {report.versions} version(s) and "
                  f"{report.champions} champion move(s)"
                  + (f"; {report.pending} left for the next sync" if report.pending else ""))


@app.command()
def ingest(
    data: Path = typer.Argument(..., help="Long-format CSV or Parquet file of actuals."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
    strict: bool = typer.Option(False, "--strict", help="Reject the whole file if any row is bad (default: reject "
                                "the bad rows, keep the good ones)."),
    rejects: Optional[Path] = typer.Option(None, help="CSV file listing every rejected row (default: "
                                           "rejected/<file>.<hash>.csv in the project)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every finding in full, with all streams."),
    future: bool = typer.Option(False, "--future", help="The file holds driver values known in advance "
                                "(unique_id, ds and driver columns, no target): a weather forecast, a campaign "
                                "calendar. A newer file replaces older values for the same timestamps."),
    again: bool = typer.Option(False, "--again", help="Store the file even if its content was ingested before: "
                               "its values are in force again where later files replaced them."),
) -> None:
    """Validate and store actuals. Idempotent: the same file twice changes nothing (unless --again); corrected
    values replace old ones and are recorded as revisions. Rows that break the project's boundary (docs/data.md)
    are rejected and listed; exits 2 when the file is refused (nothing is written then). Further numeric columns
    are kept as observed driver values. With --future, store driver values known in advance instead."""
    from mlma.data import DataError
    from mlma.store import Store, file_sha256

    config = _project(project)
    d = config.data
    if not data.exists():
        _fail(f"{data}: no such file")
    if data.is_dir():
        _fail(f"{data} is a folder; `mlma ingest` takes one CSV or Parquet file (write a Parquet dataset folder to "
              f"one file, or ingest its part files one by one)")
    if rejects is not None and rejects.is_dir():
        _fail(f"--rejects {rejects} is a folder; give the CSV file to write the rejected rows to")
    if future:
        _ingest_future(config, data, again=again)
        return
    target = rejects or config.rejected_dir / f"{data.name}.{file_sha256(data)[:12]}.csv"
    try:
        with Store.open(config.store_url) as store:
            report = store.ingest_file(data, freq=d.freq or None, tick=d.tick or None, id_col=d.id_col,
                                       time_col=d.time_col, target_col=d.target_col,
                                       on_bad_rows="raise" if strict else "drop", limits=config.ingest_limits(),
                                       rejects=target, again=again)
            later = store.ingests_replacing(report.ingest_id) if report.duplicate else []
    except (DataError, ValueError, FileNotFoundError) as exc:
        named = isinstance(exc, DataError) and exc.column in (d.id_col, d.time_col, d.target_col)
        _fail(str(exc) + ("; a project reads its files' column names from id_col, time_col and target_col in the "
                          "[data] section of mlma.toml" if named and "missing column" in str(exc) else ""))
    if report.duplicate:
        _say_duplicate(data, report, later)
        return
    from mlma.store.records import driver_counts

    # A row whose y is the same but whose observed driver values changed is revised: which drivers, said.
    console.print(f"{data}: {report.rows_new:,} new, {report.rows_revised:,} revised, "
                  f"{report.rows_unchanged:,} unchanged, {report.rows_dropped:,} dropped rows; "
                  f"{report.new_streams:,} new streams"
                  + (f"; driver values revised: {driver_counts(report.drivers_revised)}"
                     if report.drivers_revised else ""))
    declared = config.drivers().columns
    given = [c for c in _columns_besides_keys(data, d) if c != d.target_col]
    present = set(given)
    absent = [c for c in declared if c not in present]
    if absent:
        # markup=False: rich would take "[data]" for a style tag and drop it.
        console.print(f"note: declared driver column(s) {', '.join(absent)} (mlma.toml [data]) are not in "
                      f"{data.name}: their observed values for these rows are unknown (a forecast takes a value "
                      "nobody ingested from a season earlier, else the last known one; docs/data.md)",
                      markup=False, highlight=False)
    if report.validation is not None:
        dropped = {f.column for f in report.validation.findings if f.code == "columns-dropped"}
        text = [c for c in declared if c in dropped]
        undeclared = [c for c in given if c not in declared and c not in dropped]
        if undeclared:
            console.print(f"note: column(s) {', '.join(undeclared)} are stored as observed driver values but not "
                          "declared in [data] drivers of mlma.toml, so no model uses them", markup=False,
                          highlight=False)
        if text:
            console.print(f"note: declared driver column(s) {', '.join(text)} (mlma.toml [data]) hold text, not "
                          f"numbers, in {data.name}: none of their values were stored (the finding below shows one; "
                          "decimals must be written with a point)", markup=False, highlight=False)
        _print_findings(report.validation, verbose)
    if report.rejected_path is not None:
        console.print(f"every rejected row, with the reason: {report.rejected_path}")
    if report.clock is not None:
        console.print(f"clock: {report.clock}", markup=False, highlight=False)
        if report.clock_fixed:
            # Said when the clock is fixed, the one moment it can still be chosen: monthly data's default tick
            # of 12 steps surprised a project fed a month per file (a tick a year).
            from mlma.calendar import TickClock

            steps = TickClock.covering(report.clock.freq, report.clock.tick, report.first_ds).horizon()
            console.print(f"note: each tick holds {steps} step(s) of {report.clock.freq} data, and runs once they "
                          f"are all in; for another tick length, set [data] tick in mlma.toml and start the project "
                          f"again before it ticks (a project's clock never changes)", markup=False, highlight=False)


def _print_findings(report, verbose: bool) -> None:
    """Findings other than the summary: one line each with its counts (all of it with ``verbose``)."""
    shown = [f for f in report.findings if f.code != "summary"]
    if not shown:
        return
    order = {"error": 0, "dropped": 1, "repaired": 2, "warning": 3, "info": 4}
    counts = {}
    for f in shown:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    console.print("findings: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: order[kv[0]]))
                  + ("" if verbose else " (--verbose for every detail)"))
    for f in sorted(shown, key=lambda f: order[f.severity]):
        where = f"{f.n_rows:,} row{'s' if f.n_rows != 1 else ''}" + (
            f" in {len(f.streams):,} stream{'s' if len(f.streams) != 1 else ''}" if f.streams else "")
        text = f.message if verbose or len(f.message) <= 160 else f.message[:157] + "..."
        console.print(f"  {f.severity:<8} {f.code:<18} {where}: {text}", markup=False, highlight=False)
        if verbose and f.streams:
            console.print(f"           streams: {', '.join(f.streams)}", markup=False, highlight=False)
        if verbose and len(f.rows):
            console.print(f"           rows: {', '.join(str(int(r)) for r in f.rows)}", markup=False,
                          highlight=False)


def _say_duplicate(data: Path, report, later: list[int]) -> None:
    """A file ingested before, as it is: nothing changed. When later ingests gave other values for some of its
    streams and times, its values are not all in force, which "nothing changed" alone hid (an earlier plan sent
    again to restore it stayed replaced): say so, and how to send it again on purpose."""
    console.print(f"{data}: already ingested (same content, ingest #{report.ingest_id}); nothing changed",
                  highlight=False)
    if later:
        shown = ", ".join(f"#{i}" for i in later[:5]) + (f" and {len(later) - 5:,} more" if len(later) > 5 else "")
        console.print(f"note: {'ingests' if len(later) != 1 else 'ingest'} {shown} since gave other values for some "
                      "of its streams and times, which are in force, not this file's: `mlma ingest --again` "
                      "stores it again, its values then in force", highlight=False)


def _ingest_future(config, data: Path, *, again: bool = False) -> None:
    from mlma.data import DataError
    from mlma.store import Store

    d = config.data
    try:
        with Store.open(config.store_url) as store:
            report = store.ingest_future(data, id_col=d.id_col, time_col=d.time_col, target_col=d.target_col,
                                         again=again)
            later = store.ingests_replacing(report.ingest_id) if report.duplicate else []
    except (DataError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if report.duplicate:
        _say_duplicate(data, report, later)
        return
    drivers = config.drivers()
    given = _columns_besides_keys(data, d)
    columns = [c for c in given if c not in drivers.columns]
    historical = [c for c in given if c in drivers.historical]
    console.print(f"{data}: {report.rows_new:,} future driver values for {report.n_streams:,} streams"
                  + (f", {report.first_ds} to {report.last_ds}" if report.first_ds is not None else ""))
    for note in report.notes:  # what was skipped and why, or repaired
        console.print(f"note: {note}", markup=False, highlight=False)
    if columns:
        # markup=False: rich would take "[data]" for a style tag and drop it.
        console.print(f"note: column(s) {', '.join(columns)} are stored but not declared in [data] drivers of "
                      "mlma.toml, so no model uses them", markup=False, highlight=False)
    if historical:
        console.print(f"note: column(s) {', '.join(historical)} are declared historical drivers (mlma.toml [data] "
                      "historical_drivers): models use their observed values only, lagged, not values known in "
                      "advance; declare them in [data] drivers to use these", markup=False, highlight=False)


def _columns_besides_keys(data: Path, d) -> list[str]:
    """The file's columns other than the stream and time keys (its drivers), as written; a column without a name
    (a comma at the end of every line: mlma.data.drop_nameless_columns) is none."""
    from mlma.data import file_columns

    return [str(c) for c in file_columns(data) if c not in (d.id_col, d.time_col) and str(c).strip()]


def _side_file(path, what: str, read):
    """``read()``, a file given beside the data (events); an error that would not say which
    file it is about (pandas' "No columns to parse from file") names it and what it should hold."""
    import pandas as pd

    try:
        return read()
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:  # EmptyDataError is a ValueError
        _fail(f"{path}: cannot read it as {what}: {exc}")


def _read_attributes(path: Path):
    """A table of the streams' attributes (CSV as text, or Parquet), as ``mlma attributes`` and ``mlma backtest
    --attributes`` read it; its source is named in later errors about it."""
    import pandas as pd

    from mlma.data import DataError, check_column_names, csv_errors_named, file_columns, is_parquet, read_csv_checked

    try:
        # Only an empty cell is missing: "NA" is Namibia's id (as the actuals' reader keeps it) or a region.
        if is_parquet(path):
            # A repeated column name: pandas would read the second as an attribute of its own ("city.1").
            check_column_names(file_columns(path), str(path), source=str(path))
            # Nullable types: an integer column with a missing cell stays integers ("7", not "7.0", which
            # --group region=7 would not find; large ids keep their digits).
            frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
        else:
            with csv_errors_named(path):
                frame = read_csv_checked(path, lambda header: dict(dtype=str, keep_default_na=False, na_values=[""]))
    except (OSError, ValueError) as exc:  # DataError is a ValueError, and names the file already
        _fail(str(exc) if isinstance(exc, DataError) else f"{path}: cannot read: {exc}")
    frame.attrs["source"] = str(path)
    return frame


@app.command()
def attributes(
    data: Path = typer.Argument(..., help="CSV or Parquet file: a unique_id column and one column per attribute "
                                          "(e.g. city, region, product_line)."),
    id_col: Optional[str] = typer.Option(None, help="Column naming the stream (default: the project's id_col)."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Set the streams' attributes, which groups are made of (--group city=Berlin, the queue's grouping)."""
    import pandas as pd

    from mlma.data import stream_id_text, unusable_ids, why_not_attribute_name, why_unusable
    from mlma.store import Store

    config = _project(project)
    id_col = id_col or config.data.id_col
    frame = _read_attributes(data)
    if id_col not in frame.columns:
        _fail(f"{data}: no column {id_col!r} naming the streams; columns: {', '.join(map(str, frame.columns))}")
    columns = [c for c in frame.columns if c != id_col]
    if not columns:
        _fail(f"{data}: no attribute columns besides {id_col!r}")
    for column in columns:
        why = why_not_attribute_name(column)
        if why is not None and frame[column].notna().any():  # all blank: it removes one an older mlma stored
            _fail(f"{data}: column {str(column)!r} cannot name an attribute: {why}; rename it; nothing was changed")
    # Blank by the id rule: white space or invisible characters only ("\u200b") name no stream either.
    blank = frame[id_col].isna().to_numpy() | (stream_id_text(frame[id_col].astype(str)) == "").to_numpy()
    if blank.any():  # a traceback before (NaN among the names), or a stream named '' looked up
        row = int(blank.argmax())
        _fail(f"{data}: row {row + 2}: column {id_col!r} is blank; every row names a stream "
              f"({int(blank.sum()):,} row(s) without one); nothing was changed")
    texts = stream_id_text(frame[id_col].astype(str))
    unusable = unusable_ids(texts)
    if unusable.any():  # no stream has such an id; PostgreSQL failed the look-up with a traceback
        row = int(unusable.argmax())
        _fail(f"{data}: row {row + 2}: {why_unusable(texts.iloc[row])}: no stream has such an id "
              f"({int(unusable.sum()):,} row(s)); nothing was changed")
    with Store.open(config.store_url) as store:
        # An id as the actuals' ingest read it: without spaces around it, unless the store holds it with them.
        raw_ids = frame[id_col].astype(str)
        ids = raw_ids.where(store.stream_ids(raw_ids.to_numpy(), create=False) >= 0, stream_id_text(raw_ids))
        duplicated = ids.duplicated()
        if duplicated.any():
            row = int(duplicated.to_numpy().argmax())
            _fail(f"{data}: stream {ids.iloc[row]!r} appears twice (row {row + 2}); one row per stream")
        known = store.stream_ids(ids.to_numpy(), create=False)
        unknown = ids[known < 0]
        values = {str(uid): {c: (None if pd.isna(v) else str(v)) for c, v in zip(columns, row)}
                  for uid, row, ok in zip(ids, frame[columns].itertuples(index=False), known >= 0) if ok}
        if values:
            store.set_attributes(values)
    # A blank cell removes that attribute of its stream (how a file says a stream no longer has one): said.
    blanks = {c: sum(v[c] is None for v in values.values()) for c in columns}
    removed = ", ".join(f"{c} on {n:,} stream(s)" for c, n in blanks.items() if n)
    console.print(f"{data}: attributes {', '.join(columns)} set on {len(values):,} streams"
                  + (f"; removed (blank cells): {removed}" if removed else "")
                  + (f"; {len(unknown):,} unknown stream(s) skipped, e.g. {unknown.iloc[0]!r} (ingest their "
                     f"actuals first)" if len(unknown) else ""))


@app.command()
def status(
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Fleet summary: streams, data span, ticks, the next tick due (and whether it waits for late actuals), what
    the last tick did, what waits for a person."""
    from rich.markup import escape

    from mlma.store.glance import glance

    # The values' checks need pandas; the commands that use the values check them (`mlma status` only reads).
    config = _project(project, check_values=False)
    _check_keep(config)
    # The quick path (standard library only) answers for a SQLite store once a tick ran; otherwise, or when
    # it cannot answer exactly as the store would, the store and the live agent answer.
    view = glance(config.store_url)
    quick = _due_from(view) if view is not None else None
    if quick is None:
        view, due, waiting = _status_from_store(_project(project))
    else:
        # Whether a due tick waits for its late actuals is asked as `mlma tick` asks it: only then, as it reads
        # the observation window (the store and the live agent, where the quick path loads neither).
        due, is_due = quick
        waiting = _late_actuals(_project(project)) if is_due else None
    table = Table(title=f"mlma project {config.root.name}", show_header=False)
    table.add_row("store", config.store_url + (" (read-only)" if view.read_only else ""))
    table.add_row("streams", f"{view.n_streams:,}")
    table.add_row("ingests", f"{view.n_ingests:,}" + (f" (last at {view.last_ingest_at:%Y-%m-%d %H:%M} UTC)"
                                                      if view.n_ingests else ""))
    done = view.last_done
    table.add_row("ticks done", f"{view.done_ticks:,}" + (f" (last: tick {done.tick}, data up to {done.end_ds})"
                                                         if done is not None else ""))
    failed = view.last_unfinished
    if failed is not None:
        table.add_row("unfinished tick", f"tick {failed.tick}: {failed.status}, {failed.attempts} "
                                         f"attempt(s){'; ' + escape(str(failed.error)) if failed.error else ''}")
    table.add_row("next tick due", escape(due) + (", waiting for late actuals" if waiting is not None else ""))
    if waiting is not None:
        table.add_row("waiting", escape(_waiting_text(waiting, config)))
    if done is not None and done.summary:
        summary = done.summary
        verdicts = ", ".join(f"{n} {label}" for label, n in summary.get("verdicts", {}).items() if n)
        table.add_row("last tick", f"{verdicts or 'start-up'}; {summary.get('retrains', 0)} re-trained, "
                                   f"{summary.get('promoted', 0)} promoted, {summary.get('fit_failures', 0)} "
                                   f"failed fits, {summary.get('escalations_resolved', 0)} escalations resolved")
    states = view.saved_states
    if states:
        damaged = [f"tick {t} DAMAGED ({error})" for t, error in states if error]
        intact = [f"tick {t}" for t, error in states if not error]
        text = "; ".join(damaged + ([f"intact: {', '.join(intact)}"] if intact else ["no intact state"]))
        if states[0][1]:
            text += (f". The agent does not tick from a damaged state: restore a backup taken after tick "
                     f"{states[0][0]} (docs/operations.md)")
        table.add_row("saved states", text)
    table.add_row("data kept", escape(_data_kept(view, config.store.keep)))
    table.add_row("open escalations", f"{view.open_escalations:,}")
    table.add_row("tick lock", escape(_tick_lock(view.lock)))
    console.print(table)


def _tick_lock(lock) -> str:
    """``mlma status``'s "tick lock": free, or who holds it until when, and whether that process is gone (killed:
    the next tick on its host takes the lock over at once, elsewhere when the lease runs out)."""
    from mlma.lock_holder import holder_is_dead

    if lock is None:
        return "free"
    holder, until = lock
    gone = "; its process no longer runs: the next tick here takes it over" if holder_is_dead(holder) else ""
    return f"held by {holder} until {until:%H:%M:%S} UTC{gone}"


def _check_keep(config) -> None:
    """Refuse a ``[store] keep`` that every command reading the values refuses (the quick path of ``mlma
    status`` reads none: it showed such a keep as in force while `mlma run` would not start)."""
    from mlma.project import CONFIG_NAME, keep_days

    try:
        keep_days(config.store.keep, "[store] keep")
    except ValueError as exc:
        _fail(f"{config.root / CONFIG_NAME}: {exc}")


def _data_kept(view, keep: str) -> str:
    """``mlma status``'s "data kept": from when, the project's ``[store] keep``, and a prune that stopped part
    way (its time recorded, older rows not all deleted yet)."""
    text = "all" if view.kept_from is None else f"from {view.kept_from:%Y-%m-%d %H:%M}"
    if view.prune_unfinished:
        text += (f"; a prune stopped part way: older rows remain (`mlma prune --before "
                 f"{view.kept_from.isoformat()}` deletes them)")
    return text + (f" ([store] keep = {keep!r})" if keep.strip() else "")


def _due_from(view) -> tuple[str, bool] | None:
    """``mlma status``'s "next tick due" from a quick look at the store, and whether a tick is due; or None when
    only the live agent can tell: no tick ran yet (the clock is not saved), the last tick did not record the next
    one (an older mlma), or the newest observation is dated after now (the ingest boundary's limit would apply)."""
    import datetime as dt

    from mlma.store.glance import NextTick

    nxt = NextTick.from_summary(view.last_done.summary if view.last_done is not None else None)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if nxt is None or view.newest_ds is None or view.newest_ds > now or view.saved_states[:1] != [
            (view.last_done.tick, None)]:
        return None
    if nxt.due(view.newest_ds):
        return f"tick {nxt.tick}", True
    return f"none: {nxt.not_complete(view.newest_ds)}", False


def _late_actuals(config) -> LateActuals | None:
    """For the quick path of ``mlma status`` once it found a tick due: whether it waits for its late actuals
    (:func:`_waits`), through the store and the live agent."""
    from mlma.live import LiveAgent
    from mlma.store import Store

    with Store.open(config.store_url) as store, LiveAgent(config, store=store, executor="inline") as live:
        return _waits(live)


def _waits(live, k: int | None = None) -> LateActuals | None:
    """The :class:`~mlma.live.LateActuals` the due tick ``k`` (default: the next tick) waits with, or None when
    it does not wait: :meth:`~mlma.live.LiveAgent.check_late_actuals`, the check `mlma tick` makes. It reads the
    observation window (the saved one, refreshed by what changed since: the tick reads less then), so it is
    asked only of a tick that is due. The start-up step never waits."""
    from mlma.live import LateActuals, NotReady

    timing = live.timing()
    try:
        if k is None:
            k, start = live.next_tick(timing)
            if start:
                return None
        live.check_late_actuals(k, timing)
    except LateActuals as exc:
        return exc
    except NotReady:  # no longer due (the store moved on since): said by the next status
        return None
    return None


def _waiting_text(late: LateActuals, config) -> str:
    """``mlma status``'s "waiting": how much of the due tick's actuals are in, and until when it waits at most."""
    minutes = max(int(-(-(late.deadline - late.now).total_seconds() // 60)), 0)   # rounded up
    return (f"{late.got / max(late.expected, 1):.0%} of the usual observations in ({late.got:,} of "
            f"{late.expected:,.0f}, as in tick {late.reference}; [agent] wait_for_share = "
            f"{config.agent.wait_for_share:g}); it runs once they reach that share, or at "
            f"{late.deadline:%Y-%m-%d %H:%M:%S} UTC at the latest (in {minutes // 60}h{minutes % 60:02d}m; "
            f"[agent] max_wait = {config.agent.max_wait!r}); `mlma tick --no-wait` runs it now")


def _status_from_store(config):
    """What ``mlma status`` shows, read through the store and the live agent (see :func:`status`): the glance,
    the next tick due, and the :class:`~mlma.live.LateActuals` it waits with (None: it does not wait)."""
    from mlma.live import LiveAgent, NotReady
    from mlma.store import StateCorrupted, Store
    from mlma.store.glance import Glance, TickRow

    def row(frame) -> TickRow | None:
        if not len(frame):
            return None
        last = frame.iloc[-1]
        return TickRow(int(last["tick"]), last["status"], int(last["attempts"]), last["error"], last["end_ds"],
                       last["summary"])

    with Store.open(config.store_url) as store:
        ticks = store.ticks()
        ingests = store.ingests()
        holder = store.lock_holder()
        view_args = dict(read_only=store.read_only, n_streams=store.stream_count(), n_ingests=len(ingests),
                         last_ingest_at=ingests["at"].max() if len(ingests) else None,
                         open_escalations=len(store.escalations(status="open")),
                         lock=None if holder is None else (holder["holder"], holder["expires_at"]),
                         newest_ds=store.newest_ds(), kept_from=store.kept_from(),
                         prune_unfinished=store.prune_unfinished())
        with LiveAgent(config, store=store, executor="inline") as live:
            states = live.saved_states()
            waiting = None
            try:
                k, start = live.next_tick()
                due = f"tick {k}" + (" (start-up: first models)" if start else "")
                if not start:
                    waiting = _waits(live, k)
            except NotReady as exc:
                due = f"none: {exc}"
            except StateCorrupted:
                due = "none: the newest saved state is damaged (see 'saved states')"
    done = ticks[ticks["status"] == "done"] if len(ticks) else ticks
    # As the glance: a tick before the last done one will not run again (the start-up tick moves).
    failed = ticks[(ticks["status"] != "done") & (ticks["tick"] > (done["tick"].max() if len(done) else -1))] \
        if len(ticks) else ticks
    return Glance(done_ticks=len(done), last_done=row(done), last_unfinished=row(failed), saved_states=states,
                  **view_args), due, waiting


@app.command()
def tick(
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
    all_due: bool = typer.Option(False, "--all", help="Run every due tick, not only the next one."),
    executor: Optional[str] = typer.Option(None, help="Override [agent] executor: inline | process[:N] | "
                                           "dask://host:8786"),
    allow_no_data: bool = typer.Option(False, "--allow-no-data", help="Run ticks that are held because nearly "
                                       "all served streams have no data in them (audited, with --by and --reason)."),
    by: Optional[str] = typer.Option(None, "--by", help="Who allows it, for the audit log (default: $MLMA_USER, "
                                     "else the login name)."),
    reason: Optional[str] = typer.Option(None, help="Why, for the audit log (with --allow-no-data)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Run the newest tick now even though it waits for its "
                                 "late actuals ([agent] wait_for_share and max_wait)."),
) -> None:
    """Run the next due tick: score, test, re-train, check challengers, forecast; commit it all at once.

    Prints each tick as it commits. Exits 0 when a tick ran, 2 when mlma.toml or an option cannot work, or the
    executor's cluster cannot be reached (the message names it), 3 when none was due (data for the next tick not
    complete, or the newest tick waits for its late actuals: --no-wait runs it), 4 when another agent holds the
    tick lock, 5 when the next tick is held because nearly all served streams have no data in it (run again with
    --allow-no-data once a person decided it should run), 130 on Ctrl-C and 143 on SIGTERM (the running tick is
    not committed, unless the stop came after its commit: the message says which).
    """
    from rich.markup import escape

    from mlma.live import LiveAgent, NotReady, TickHeld
    from mlma.project import ConfigError
    from mlma.store import LockHeld
    from mlma.training import ExecutorUnavailableError

    if (by is not None or reason is not None) and not allow_no_data:
        _fail("--by and --reason go with --allow-no-data (they are what the audit log records for it)")
    config = _project(project)
    executor = _executor_option(executor)
    allow = None
    if allow_no_data:
        from mlma.api.cli import actor

        allow = (actor(by), reason)
    ran = []
    ticking = True  # a Ctrl-C until the ticks are done stops a tick; after, the pruning or the due check
    agent = []  # the agent, once open: which tick it last committed, when a stop comes

    def progress(result) -> None:
        ran.append(result)
        console.print(escape(str(result)))

    # A scheduler's stop (a job's deadline, `timeout`, Kubernetes) is SIGTERM: end like Ctrl-C, not killed
    # mid-tick with the lock held until its lease runs out.
    with _on_sigterm(_raise_terminated):
        try:
            with LiveAgent(config, executor=executor) as live:
                agent.append(live)
                # A person who allows a tick without data means it to run now: not to wait for actuals first.
                _tick_or_catch_up(live, all_due, allow, progress, wait=not (no_wait or allow_no_data))
                ticking = False  # what follows runs after the commits
                _say_what_is_next(live, all_due)
                _apply_retention(live)  # only after ticks that ran to the end: not after an error or Ctrl-C
        except KeyboardInterrupt as exc:
            _say_stopped(exc, ticking, ran, agent[0].last_committed if agent else None)
            raise typer.Exit(code=EXIT_TERMINATED if isinstance(exc, Terminated) else 130)
        except TickHeld as exc:
            console.print(f"[yellow]{exc}[/yellow]" + (f" ({len(ran)} tick(s) ran before)" if ran else ""))
            raise typer.Exit(code=5)
        except (ConfigError, ExecutorUnavailableError) as exc:  # a cluster that cannot be reached: said in a line
            _fail(str(exc) + (f" ({len(ran)} tick(s) ran before)" if ran else ""))
        except NotReady as exc:
            console.print(f"nothing to do: {escape(str(exc))}")
            raise typer.Exit(code=3)
        except LockHeld as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(code=4)
    if not ran:
        console.print("nothing to do: no tick is due")
        raise typer.Exit(code=3)


def _tick_or_catch_up(live, all_due: bool, allow, progress, *, wait: bool = True) -> None:
    if all_due:
        live.catch_up(on_tick=progress, allow_no_data=allow, wait=wait)
    else:
        progress(live.step(allow_no_data=allow, wait=wait))


@contextlib.contextmanager
def _on_sigterm(handler):
    """``handler`` answers SIGTERM in the block (on the main thread; elsewhere signals cannot be handled); the
    handler before it is put back after, for callers that run the CLI in their own process."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _say_stopped(exc: KeyboardInterrupt, ticking: bool, ran: list, last_committed: int | None) -> None:
    """Said, not a silent exit 130: whether the tick that was running committed (the stop came after its
    transaction: it is done) or not (nothing of it was written, and it runs again whole)."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    printed = {r.tick for r in ran}
    if ticking and last_committed is not None and last_committed not in printed:
        console.print(f"{what} after tick {last_committed} committed (it is done; its alerts are sent by the next "
                      f"run); {len(ran) + 1} tick(s) committed", highlight=False)
    elif ticking:
        console.print(f"{what}: the running tick was not committed (nothing of it was written); run "
                      f"`mlma tick` again" + (f" ({len(ran)} tick(s) committed before)" if ran else ""),
                      highlight=False)
    else:
        console.print(f"{what} after {len(ran)} committed tick(s), while pruning or checking what is due; "
                      "no tick was lost", highlight=False)


def _say_what_is_next(live, all_due: bool) -> None:
    """After the ticks, whether the data holds the next ones too (a project that fell behind; after one tick),
    or the next waits for its late actuals (said after ``--all`` too: that is where the catch-up stopped)."""
    from rich.markup import escape

    from mlma.live import LateActuals, NotReady

    try:
        k, _ = live.due_tick()
    except LateActuals as exc:
        console.print(f"next: {escape(str(exc))}")
        return
    except NotReady:
        return
    if not all_due:
        console.print(f"tick {k} is due too: run `mlma tick --all` for every due tick")


def _apply_retention(live, said: set[str] | None = None) -> None:
    """``[store] keep`` and ``[registry] keep_versions`` after the ticks of ``mlma tick`` and each round of ``mlma
    run``: print what each prune deleted, or why it could not run (each reason once in ``said`` until that
    retention succeeds again). Never an exit code of its own: the ticks committed, and the next round or tick tries
    again."""
    from rich.markup import escape

    for setting, apply in (("[store] keep", live.apply_retention),
                           ("[registry] keep_versions", live.apply_version_retention)):
        prefix = f"retention ({setting}) did not run: "
        try:
            report = apply()
        except Exception as exc:  # noqa: BLE001 - retention must not stop the agent; the message says why not
            text = f"{prefix}{type(exc).__name__}: {exc}"
            if said is None or text not in said:
                console.print(f"[yellow]{escape(text)}[/yellow]")
            if said is not None:
                said.add(text)
            continue
        if said is not None:  # a failure that comes back later is said again
            said.difference_update({text for text in said if text.startswith(prefix)})
        if report is not None:
            console.print(f"retention: {escape(str(report))}")


#: The shortest `mlma run --every`: each round reads the store (what is due, what retention asks).
MIN_SERVICE_INTERVAL = 0.01
#: The longest round of `mlma run`: a year (a longer wait is no service, and beyond 292 years no duration).
MAX_SERVICE_INTERVAL_DAYS = 366


def _service_interval(every: str) -> float:
    """``mlma run --every`` in seconds: a duration with its unit. A bare number is refused: pandas reads
    ``3600`` as 3,600 nanoseconds, a service that would read the store in a busy loop."""
    import math

    import pandas as pd

    text = str(every).strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:  # "nan" and "inf" are floats too, but no number of seconds: said as the text that is no duration
        if math.isfinite(number):
            _fail(f"--every needs a unit: {text!r} would be read as nanoseconds; write e.g. {text}s, 15min or 1h")
    try:
        interval = pd.Timedelta(text).total_seconds()
    except pd.errors.OutOfBoundsTimedelta:  # "1000000D": beyond what a duration holds (about 292 years)
        _fail(f"--every must be at most {MAX_SERVICE_INTERVAL_DAYS:,} days, got {every!r}")
    except ValueError:
        interval = float("nan")
    if interval != interval:  # NaN: not a duration ("soon"), or pandas' NaT for an empty text
        _fail(f"--every must be a duration such as 15min, 1h or 1D, got {every!r}")
    if not interval >= MIN_SERVICE_INTERVAL:
        _fail(f"--every must be at least {MIN_SERVICE_INTERVAL * 1000:g}ms, got {every!r}")
    if interval > MAX_SERVICE_INTERVAL_DAYS * 86_400:
        _fail(f"--every must be at most {MAX_SERVICE_INTERVAL_DAYS:,} days, got {every!r}")
    return interval


@app.command()
def run(
    every: str = typer.Option("1h", help="How often to look for due ticks, e.g. 15min, 1h, 1D."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
    executor: Optional[str] = typer.Option(None, help="Override [agent] executor."),
    iterations: Optional[int] = typer.Option(None, min=1, help="Stop after this many rounds (default: run until "
                                             "stopped with Ctrl-C or SIGTERM)."),
) -> None:
    """Run as a service: every interval, run all due ticks. SIGTERM finishes the running tick, then stops; a
    second SIGTERM stops the running tick too (not committed: it runs again whole at the next start)."""
    import logging

    from rich.markup import escape

    from mlma.live import LateActuals, NotReady, TickHeld, open_agent
    from mlma.project import ConfigError
    from mlma.store import LockHeld

    if not logging.getLogger().handlers:
        # A service's log: store retries, timeouts and alert deliveries, with times.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    interval = _service_interval(every)
    config = _project(project)
    executor = _executor_option(executor)
    stopping = {"now": False}
    ticking = {"now": False}  # inside a catch-up, where a second SIGTERM stops the running tick
    pruning = {"now": False}  # inside [store] keep's prune, which a SIGTERM stops at once

    def _stop(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        if stopping["now"] and ticking["now"]:
            raise Terminated("SIGTERM")  # asked twice: the supervisor will not wait for the tick
        stopping["now"] = True
        if pruning["now"]:
            # A prune of a large store can outlast a supervisor's grace period (then SIGKILL); stopped here it
            # is finished by the next start (the kept time is recorded before any row goes), and no tick is lost.
            raise Terminated("SIGTERM")
        if ticking["now"]:
            logging.getLogger("mlma.cli").warning(
                "SIGTERM: stopping after the running tick commits (a second SIGTERM stops it uncommitted)")

    with _on_sigterm(_stop):
        rounds = 0
        held_tick = None  # the tick last found held, so a hold is reported once
        waiting_for = None  # the same for what keeps the clock from starting
        retention_said: set[str] = set()  # why [store] keep could not prune, said once each
        # The database may be down when the service starts (a reboot): wait for it, logging each try.
        live = open_agent(config, executor=executor, stopping=lambda: stopping["now"], max_delay=min(60.0, interval))
        if live is None:
            console.print("stopped before the store could be reached")
            return
        with live:
            while not stopping["now"] and (iterations is None or rounds < iterations):
                rounds += 1
                printed: set[int] = set()

                def show(result) -> None:
                    printed.add(result.tick)
                    console.print(escape(str(result)))

                # Whether this round's alerts are taken care of: each committed tick notified as it committed, and
                # the agent that holds the lock ticks and notifies in its own process.
                notified = False
                try:
                    ticking["now"] = True
                    notified = bool(live.catch_up(on_tick=show, stopping=lambda: stopping["now"]))
                except KeyboardInterrupt as exc:
                    what = "terminated (a second SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
                    if live.last_committed is not None and live.last_committed not in printed and (
                            not printed or live.last_committed > max(printed)):
                        console.print(f"{what} in round {rounds}, after tick {live.last_committed} committed (it is "
                                      "done; its alerts are sent at the next start)", highlight=False)
                    else:
                        console.print(f"{what} in round {rounds}: the tick that was running was not committed and "
                                      "runs again whole at the next start", highlight=False)
                    raise typer.Exit(code=EXIT_TERMINATED if isinstance(exc, Terminated) else 130)
                except LockHeld as exc:
                    notified = True
                    console.print(f"[yellow]skipped this round: {exc}[/yellow]")
                except TickHeld as exc:
                    # Not a failure: the tick waits for a person (escalated once). Said once per held tick, not
                    # every round, so that the service's log stays readable while nobody has answered yet.
                    if exc.tick != held_tick:
                        console.print(f"[yellow]waiting: {escape(str(exc))}[/yellow]")
                    held_tick = exc.tick
                except NotReady as exc:
                    # Not a failure either: the data cannot start the clock yet (a frequency still pending), or the
                    # newest tick waits for its late actuals (said once per tick: its counts change as they come).
                    said = f"late actuals of tick {exc.tick}" if isinstance(exc, LateActuals) else str(exc)
                    if said != waiting_for:
                        console.print(f"[yellow]waiting: {escape(str(exc))}[/yellow]")
                    waiting_for = said
                except ConfigError as exc:
                    # The service read mlma.toml when it started: a mended file takes effect only on a restart
                    # (a unit with Restart=always does that), so it stops rather than retry with the stale file.
                    _fail(f"{exc}; mend mlma.toml and start the service again")
                except Exception as exc:  # noqa: BLE001 - a service logs the failure and tries again next round
                    # A fault of the store or its disk in the one line `mlma tick` says it in (not the driver's
                    # statement, parameters and lease token); it is tried again next round.
                    failed = store_failure(exc)
                    failure = failed[1] if failed is not None else f"{type(exc).__name__}: {exc}"
                    console.print(f"[red]tick failed: {escape(failure)}[/red]")
                finally:
                    ticking["now"] = False
                if not notified and not stopping["now"]:
                    # No tick committed: deliveries that failed at the last tick, reminders due and a held tick's
                    # escalation go out now, not a tick later (in the background; skipped while the last
                    # notification is still being planned or delivered).
                    live.notify_due()
                try:
                    if not stopping["now"]:  # a stop (SIGTERM) waits for no prune
                        pruning["now"] = True
                        try:
                            _apply_retention(live, said=retention_said)
                        except KeyboardInterrupt as exc:
                            stopping["now"] = True
                            what = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
                            console.print(f"retention stopped part way ({what}): the rows it deleted are gone, the "
                                          "rest is pruned by the next round or start", highlight=False)
                        finally:
                            pruning["now"] = False
                    if iterations is not None and rounds >= iterations:
                        break
                    deadline = time.monotonic() + interval
                    while not stopping["now"] and time.monotonic() < deadline:
                        time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
                except KeyboardInterrupt:
                    stopping["now"] = True  # between ticks (pruning, waiting): a stop like SIGTERM's, no tick lost
        console.print(f"stopped after {rounds} round(s)")


@app.command()
def forecast(
    out: Optional[Path] = typer.Option(None, help="Write to this .csv or .parquet file (default: print CSV)."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Export the forecasts issued by the last tick: unique_id, ds, y_hat, model_version."""
    from mlma.live import LiveAgent, NotReady

    config = _project(project)
    try:
        with LiveAgent(config, executor="inline") as live:
            frame = live.forecasts()[["unique_id", "ds", "y_hat", "model_version"]]
    except NotReady as exc:
        _fail(str(exc))
    if out is None:
        print(frame.to_csv(index=False), end="")
        return
    if out.suffix.lower() not in (".csv", ".parquet"):  # as simulate and validate take them: F.CSV too
        _fail(f"--out must end in .csv or .parquet, got {out}")
    blocked = next((folder for folder in out.parents if folder.exists() and not folder.is_dir()), None)
    if blocked is not None:  # it said "non-existent directory" of a file
        _fail(f"cannot write --out {out}: {blocked} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # as simulate and dataset make theirs
        if out.suffix.lower() == ".parquet":
            frame.to_parquet(out, index=False)
        else:
            frame.to_csv(out, index=False)
    except OSError as exc:
        _fail(f"cannot write --out {out}: {exc.strerror or exc}")
    console.print(f"wrote {len(frame):,} forecasts to {out}")


@app.command()
def upgrade(
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Migrate the project's store to the schema this version of mlma needs (stop the agent first)."""
    from mlma.store import Store
    from mlma.store.migrate import head_revision
    from mlma.store.store import refuse_missing_file

    config = _project(project)
    refuse_missing_file(config.store_url)  # a moved file or a typo is said, not made into an empty store
    before = None
    try:
        with Store.open(config.store_url, check_schema=False) as store:
            before = store.schema_revision()
    except Exception:  # noqa: BLE001 - an empty database has no revision; upgrade says what is wrong
        pass
    after = Store.upgrade(config.store_url)
    console.print(f"store schema {before or 'empty'} -> {after} (this mlma needs {head_revision()})")


@app.command()
def backup(
    destination: Path = typer.Argument(..., help="File to write (SQLite) - for PostgreSQL use pg_dump."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file (never the store itself)."),
) -> None:
    """Copy a SQLite store consistently while the agent may be running; artifacts are plain files (copy
    the artifacts folder too, after the database)."""
    import shutil

    from mlma.store import Store

    config = _project(project)
    with Store.open(config.store_url) as store:
        try:
            path = store.backup(destination, overwrite=force)
        except (NotImplementedError, shutil.SameFileError, NotADirectoryError) as exc:
            _fail(str(exc))
        except FileExistsError as exc:
            _fail(f"{exc}, or pass --force to overwrite it")
        except OSError as exc:
            _fail(f"cannot write the backup to {destination}: {exc}")
    console.print(f"wrote {path}; now copy {config.artifacts_dir} as well")


@app.command()
def gc(
    min_age: float = typer.Option(3600.0, min=0, help="Only artifacts older than this many seconds (a tick that is "
                                               "running may have written newer ones)."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Delete model artifacts no recorded version refers to (left by ticks that crashed before commit)."""
    from mlma.registry import ModelRegistry, SharedArtifactsError
    from mlma.store import Store

    config = _project(project)
    with Store.open(config.store_url) as store:
        try:
            removed = ModelRegistry(store, config.artifacts_dir).collect_garbage(min_age_seconds=min_age)
        except SharedArtifactsError as exc:
            _fail(str(exc))
    console.print(f"removed {len(removed)} unreferenced artifact(s)")


@app.command()
def unlock(
    reason: str = typer.Option(..., "--reason", "-r", help="Why (kept in the audit log), e.g. 'agent host died'."),
    by: Optional[str] = typer.Option(None, "--by", help="Who acts, for the audit log (default: $MLMA_USER, else "
                                     "the login name)."),
    force: bool = typer.Option(False, "--force", help="Break it even though its holder renewed it lately (an "
                               "agent that is alive: its running tick is then lost)."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Break the tick lock of an agent that is gone (its host died) before the lock expires; audited. A tick
    that agent was running is not committed: its lease is checked at the commit."""
    import datetime as dt

    from mlma.api.cli import actor
    from mlma.lock_holder import holder_is_dead
    from mlma.store import Store
    from mlma.store.lock import renewed_lately

    from mlma.store.records import check_reason

    config = _project(project)
    who = actor(by)
    if not reason.strip():
        _fail("--reason must say why the lock is broken (kept in the audit log)")
    try:
        check_reason(reason)
    except ValueError as exc:  # too long, control characters: said before the lock is looked at
        _fail(f"--{exc}")
    with Store.open(config.store_url) as store:
        holder = store.lock_holder()
        now = dt.datetime.now(dt.timezone.utc)
        # An agent process on this host that no longer runs is gone however lately it renewed (killed).
        if (holder is not None and not force and not holder_is_dead(holder["holder"])
                and renewed_lately(holder["heartbeat_at"], holder["expires_at"], now)):
            age = (now - holder["heartbeat_at"]).total_seconds()
            _fail(f"the tick lock's holder {holder['holder']} renewed it {age:.0f} s ago: it looks alive (its tick "
                  "would be lost); wait, stop it, or pass --force")
        held = store.break_lock(by=who, reason=reason)
    if not held:
        console.print("the tick lock was not held; nothing to break (audited all the same)")
        return
    console.print(f"broke the tick lock{'' if holder is None else ' of ' + holder['holder']}; the next `mlma tick` "
                  "takes it", highlight=False, markup=False)


@app.command()
def prune(
    keep: Optional[str] = typer.Option(None, help="Keep this much data time before the end of the last done tick, "
                                       "e.g. 400D or 13W; older data is deleted."),
    before: Optional[str] = typer.Option(None, help="Delete the data before this data time (ISO 8601, e.g. "
                                         "2025-01-01), instead of --keep."),
    versions: Optional[int] = typer.Option(None, "--versions", help="Instead of data: delete the model artifacts of "
                                           "each stream's versions older than its newest N, never of a version in "
                                           "use (serving, roll-back target, challenger); the versions' rows stay."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
    reason: Optional[str] = typer.Option(None, "--reason", "-r", help="Why (kept in the audit log)."),
    by: Optional[str] = typer.Option(None, "--by", help="Who acts, for the audit log (default: $MLMA_USER, else "
                                     "the login name)."),
    project: Optional[Path] = typer.Option(None, help="Project folder (default: the current folder)."),
) -> None:
    """Delete old data the agent no longer reads: observations, driver values and revisions before a time,
    and the verdicts and forecasts of the ticks that ended by then (a store otherwise grows for ever). Refused
    inside the next tick's training window. Later ingests drop rows older than that time. With --versions:
    the model artifacts of old versions instead (mlma.toml's keep_versions, in the registry section, does it
    after every tick)."""
    from mlma.api.cli import actor
    from mlma.live import LiveAgent, NotReady
    from mlma.params import data_time
    from mlma.project import MAX_KEEP_VERSIONS, ConfigError, parse_keep

    given = [name for name, value in (("--keep", keep), ("--before", before), ("--versions", versions))
             if value is not None]
    if len(given) != 1:
        _fail("give one of --keep (e.g. 400D) or --before (a data time), or --versions (e.g. 3) for model artifacts"
              + (f"; not {' and '.join(given)} together" if given else ""))
    if versions is not None and not 1 <= versions <= MAX_KEEP_VERSIONS:
        _fail(f"--versions (the newest model versions per stream whose artifacts are kept) must be a whole number "
              f"from 1 to {MAX_KEEP_VERSIONS:,}, got {versions}")
    config = _project(project)
    who = actor(by)
    if versions is not None:
        _prune_versions(config, versions, who, reason, dry_run)
        return
    span = cut = None
    if keep is not None:
        try:
            span = parse_keep(keep, "--keep")
        except ValueError as exc:
            _fail(str(exc))
        if span is None:
            _fail(f"--keep must be a whole number of days or weeks such as 400D or 13W, got {keep!r}")
    try:
        with LiveAgent(config, executor="inline") as live:
            if before is not None:  # a data time as for abnormal periods: ISO 8601, of the project's time zones
                cut = data_time(before, "--before", time_zones=live.store.time_zones())
            report = live.prune(cut, keep=span, by=who, reason=reason, dry_run=dry_run)
    except (NotReady, ConfigError, ValueError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        if not dry_run:
            console.print("interrupted (Ctrl-C): what the prune deleted before it stopped stays deleted and the store "
                          "works as it is; `mlma prune` again (or the next `mlma run` round, with [store] keep) "
                          "deletes the rest (`mlma status` says whether any is left)", highlight=False, markup=False)
        raise typer.Exit(code=130) from None
    console.print(str(report))


def _prune_versions(config, keep: int, who: str, reason: str | None, dry_run: bool) -> None:
    """``mlma prune --versions N``: the artifacts of each stream's versions older than its newest N, as the agent
    does after its ticks with ``[registry] keep_versions``; audited (``prune-versions``)."""
    from mlma.live import LiveAgent
    from mlma.project import ConfigError

    try:
        with LiveAgent(config, executor="inline") as live:
            report = live.prune_versions(keep, by=who, reason=reason, dry_run=dry_run)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    except OSError as exc:  # a file the prune cannot delete (permissions, a read-only folder)
        _fail(f"an artifact file could not be deleted ({exc}); the versions marked pruned stay so, and the next "
              "`mlma prune --versions` deletes the files left")
    except KeyboardInterrupt:
        if not dry_run:
            console.print("interrupted (Ctrl-C): the versions marked pruned stay so, and the artifact files not "
                          "deleted yet are deleted by the next `mlma prune --versions` (or the next tick, with "
                          "[registry] keep_versions)", highlight=False, markup=False)
        raise typer.Exit(code=130) from None
    console.print(str(report), highlight=False, markup=False)


@app.command("table")
def table_command(
    results: list[Path] = typer.Argument(..., help="Backtest output folder(s) (with summary.json)."),
    all_rows: bool = typer.Option(False, "--all", help="Also list the schedules the frontier added."),
    pooled: bool = typer.Option(False, "--pooled", help="One table over the folders' streams together (e.g. "
                                "several simulator seeds): each policy's gap with one interval over all streams."),
    bootstrap: int = typer.Option(1000, help="Bootstrap replicates of the pooled interval."),
) -> None:
    """Print a backtest's results as a Markdown table (for docs and issues); with several folders, one
    table of the gaps, headroom and labour over all of them, a row per folder and policy; with ``--pooled``,
    the folders' streams as one fleet (their per_stream.csv): a row per policy every folder holds."""
    import json

    from mlma.backtest import runs_markdown, summary_markdown

    if pooled:
        _pooled_table(results, bootstrap)
        return
    if bootstrap != 1000:  # only the pooled table resamples: the runs' own intervals are in their summaries
        _fail("--bootstrap goes with --pooled; the tables of single runs show the intervals their backtests made")

    runs = []
    for folder in results:
        path = folder / "summary.json" if folder.is_dir() else folder
        if not path.exists():
            _fail(f"no summary.json in {folder}")
        try:
            payload = json.loads(path.read_text())
            policies = payload["policies"]
        except (ValueError, KeyError, TypeError) as exc:
            _fail(f"{path} is not a backtest summary ({type(exc).__name__}: {exc})")
        if not isinstance(policies, list) or not all(isinstance(row, dict) and isinstance(row.get("policy"), str)
                                                     for row in policies):
            _fail(f"{path} is not a backtest summary: its 'policies' must be a list of rows, each with its "
                  "'policy' name (as mlma backtest writes them)")
        runs.append((path.parent.name, policies))
    if len(runs) == 1:
        print(summary_markdown(runs[0][1], include_frontier=all_rows))
    else:
        print(runs_markdown(runs, include_frontier=all_rows))


def _pooled_table(results: list[Path], bootstrap: int) -> None:
    import json

    import pandas as pd

    from mlma.backtest import pooled_markdown
    from mlma.evaluation import MAX_BOOTSTRAP

    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        _fail(f"--bootstrap must be a whole number of replicates from 0 to {MAX_BOOTSTRAP:,}, got {bootstrap}")
    frames, added = {}, set()
    for folder in results:
        path = folder / "per_stream.csv"
        if not path.exists():
            _fail(f"no per_stream.csv in {folder}: --pooled reads each backtest's per-stream results")
        name = folder.name
        if name in frames:
            _fail(f"two folders are named {name!r}: the pooled streams are named after their folder")
        try:
            # Stream ids as written: as numbers, '01' and '1' would be one stream, and 'NA' none.
            frames[name] = pd.read_csv(path, dtype={"unique_id": str}, keep_default_na=False,
                                       na_values={c: [""] for c in ("mae", "n_scored", "retrains")})
        except (ValueError, OSError) as exc:
            _fail(f"{path} cannot be read ({type(exc).__name__}: {exc})")
        missing = {"policy", "unique_id", "mae", "n_scored", "retrains"} - set(frames[name].columns)
        if missing:
            _fail(f"{path} is not a backtest's per_stream.csv: it lacks {', '.join(sorted(missing))}")
        for column in ("mae", "n_scored", "retrains"):  # "could not convert string to float: 'abc'" named no file
            values = pd.to_numeric(frames[name][column], errors="coerce")
            bad = values.isna() & frames[name][column].notna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                _fail(f"{path}: column {column} holds {frames[name][column].iloc[row]!r} (row {row + 2}), not a "
                      "number")
            frames[name][column] = values
        summary = folder / "summary.json"
        if summary.exists():  # the schedules the backtest added for the frontier get no row
            try:
                added |= {row["policy"] for row in json.loads(summary.read_text())["policies"]
                          if row.get("frontier_only")}
            except (ValueError, KeyError, TypeError) as exc:
                _fail(f"{summary} is not a backtest summary ({type(exc).__name__}: {exc})")
    try:
        print(pooled_markdown(frames, n_boot=bootstrap, frontier_only=added))
    except ValueError as exc:
        _fail(str(exc))


@app.command("datasets")
def datasets_command(
    use: str | None = typer.Option(None, help="Only the panels of one use: 'report' (docs/results.md reports "
                                              "on them) or 'tuning' (kept for choosing settings)."),
) -> None:
    """List the bundled real data sets (need the 'data' extra), one name a line."""
    from mlma.datasets import available_datasets

    try:
        names = available_datasets(use)
    except ValueError as exc:
        _fail(str(exc))
    for name in names:
        console.print(name)


@app.command("dataset")
def dataset_command(
    name: str = typer.Argument(..., help="Data set name (see `mlma datasets`)."),
    out: Path = typer.Option(..., help="Output file, .csv or .parquet."),
) -> None:
    """Export a bundled real panel in long format, ready for `mlma backtest`."""
    from mlma.datasets import export_dataset

    try:
        export_dataset(name, out)
    except (ValueError, ImportError) as exc:
        _fail(str(exc))
    except OSError as exc:  # a folder that is a file, no permission: said, as `mlma backtest --out` says it
        _fail(f"cannot write {out}: {exc}")
    console.print(f"wrote {out}")


def print_summary(result, title: str) -> None:
    """Print the backtest's per-policy table (the policies asked for; the frontier's schedules are in
    summary.json and the report)."""
    from mlma.backtest import CONSOLE_KEYS, SUMMARY_COLUMNS, format_cell, summary_rows

    table = Table(title=title)
    rows = summary_rows(result.summary)
    # The main columns of `mlma table`; those no policy has a value for (detection on real data) are left out.
    columns = [c for c in SUMMARY_COLUMNS
               if c[1] in CONSOLE_KEYS and any(row.get(c[1]) is not None for row in rows)]
    for header, _, fmt in columns:
        # The policy (with its settings) and the gap with its interval are read whole; others may shrink.
        table.add_column(header, justify="left" if header == "policy" else "right",
                         no_wrap=header == "policy" or fmt == "gap")
    for row in rows:
        table.add_row(*[format_cell(row, key, fmt) for _, key, fmt in columns])
    console.print(table)
    if any(row.get("gap_pct") is not None for row in rows):
        console.print(f"gap: MAE minus the staggered-periodic frontier's at the policy's re-trainings, in % of "
                      f"always's MAE, 95 % bootstrap interval over streams; frontier of "
                      f"{len(result.frontier)} schedules ({', '.join(f['policy'] for f in result.frontier)})")


# The engineer's commands (serve, tokens, actions) live with the API they share code with.
from mlma.api.cli import register as _register_api_commands  # noqa: E402

_register_api_commands(app)


if __name__ == "__main__":  # pragma: no cover
    app()
