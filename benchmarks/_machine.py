"""What the benchmark ran on: CPUs, libraries, BLAS threads, code version, load, date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    import numpy  # noqa: F401  (loads the BLAS whose thread pool is reported)

    keys = ("internal_api", "version", "num_threads", "architecture")
    pools = []
    for pool in threadpool_info():
        entry = {k: pool.get(k) for k in keys if pool.get(k) is not None}
        # numpy and scipy each bundle their own OpenBLAS; the file name says whose it is.
        entry["library"] = Path(pool.get("filepath", "")).parent.name.replace(".libs", "") or "?"
        pools.append(entry)
    return pools


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=10).stdout.rstrip()

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": usable,
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in ("numpy", "scipy", "pandas", "river", "evidently", "mlma")},
        "blas": blas_info(),
        "code": git_state(),
        "load_average_start": load_average(),
        # glibc's allocator settings change the cost of the large temporaries a tick allocates.
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
