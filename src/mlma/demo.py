"""The demo's live half: the simulated platform replayed through the live agent into a project folder.

Day by day, as the data would arrive, the actuals are ingested and the agent ticks, exactly as `mlma ingest`
and `mlma tick` would do it; the project then holds a real fleet history for the dashboard (`mlma serve`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd

from mlma.project import ProjectConfig, init_project, load_config


def build_live_project(sim, root: str | Path, *, model: str = "ridge", first_tick: int = 28,
                       progress: bool = False, db: str | None = None) -> tuple[ProjectConfig, str]:
    """Create (or re-create) a project at ``root`` (its store a SQLite file in it, or the empty database at
    ``db``), replay ``sim`` through it and make an admin token.

    Returns the project's configuration and the plain admin token (named ``demo``). Streams get their
    simulated ``city`` as an attribute, so that groups and the queue's grouping work.
    """
    from mlma.api.auth import create_token
    from mlma.live import LiveAgent
    from mlma.store import Store

    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    init_project(root, db=db, model=model)
    toml = root / "mlma.toml"
    text = re.sub(r'(?m)^executor = .*$', 'executor = "inline"', toml.read_text())
    text = re.sub(r'(?m)^initial_ticks = .*$', f"initial_ticks = {first_tick}", text)
    toml.write_text(text)
    config = load_config(root)
    data = sim.data
    day = ((data["ds"] - data["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        chunks = [("history", data[day < first_tick])]
        chunks += [(f"day-{d:03d}", data[day == d]) for d in range(first_tick, int(day.max()) + 1)]
        bar = _bar(progress, len(chunks))
        for i, (name, chunk) in enumerate(chunks):
            store.ingest_frame(chunk, f"simulation:{name}")
            if i == 0:
                cities = sim.streams.set_index("unique_id")["city"].to_dict()
                known = set(store.streams()["unique_id"])
                store.set_attributes({uid: {"city": city} for uid, city in cities.items() if uid in known})
            elif i > 1:
                new = set(store.streams()["unique_id"]) - set(store.streams()[
                    store.streams()["attributes"].map(bool)]["unique_id"])
                if new:
                    store.set_attributes({uid: {"city": cities[uid]} for uid in new if uid in cities})
            live.catch_up()
            bar()
        _, token = create_token(store, "demo", "admin", by="user:demo")
    return config, token


def _bar(enabled: bool, total: int):
    if not enabled:
        return lambda: None
    from rich.progress import Progress

    progress = Progress(transient=True)
    progress.start()
    task = progress.add_task("live replay", total=total)

    def advance() -> None:
        progress.advance(task)
        if progress.tasks[0].finished:
            progress.stop()

    return advance
