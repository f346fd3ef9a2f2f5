"""The form of an executor spec (``inline``, ``process[:N]``, ``dask://host:port``), checked without building it.

Kept apart from :mod:`mlma.training`, which builds executors, so that reading ``mlma.toml`` (``mlma status`` too)
checks ``[agent] executor`` without importing the model stack.
"""

from __future__ import annotations

__all__ = ["check_executor_spec"]


#: The most worker processes ``process:N`` starts: the pool forks them all at once, and ``process:100000`` forked
#: thousands before any fit ran (a stop then hung in a half-forked child). More workers than CPUs add memory, not
#: speed; a fleet that needs more machines wants a cluster (``dask://``).
MAX_PROCESS_WORKERS = 1024


#: The port of a Dask scheduler whose address gives none (Dask's own default).
DASK_PORT = 8786


def scheduler_address(spec: str) -> str:
    """The ``tcp://host:port`` of a ``dask://`` or ``tcp://`` executor spec, the port :data:`DASK_PORT` when it
    gives none; ``ValueError`` for an address that is not a host and a port.

    >>> scheduler_address("dask://10.0.0.5"), scheduler_address("tcp://[::1]:9000")
    ('tcp://10.0.0.5:8786', 'tcp://[::1]:9000')
    >>> scheduler_address("dask://10.0.0.5:8786/extra")
    Traceback (most recent call last):
    ...
    ValueError: executor 'dask://10.0.0.5:8786/extra': the scheduler's address must be host or host:port (a port \
from 1 to 65535), nothing after it
    """
    from urllib.parse import urlsplit

    address = spec.split("://", 1)[1]
    problem = ValueError(f"executor {spec!r}: the scheduler's address must be host or host:port (a port from 1 to "
                         "65535), nothing after it")
    parts = urlsplit(f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        raise problem from None
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username or port == 0:
        raise problem
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"tcp://{host}:{port or DASK_PORT}"


def check_executor_spec(spec: str) -> str:
    """The executor spec string, stripped, if :func:`mlma.training.make_executor` could build it; ValueError
    otherwise. It checks the form only (no pool is started, no scheduler asked), so a project file or a
    command-line option is refused before any work.

    >>> check_executor_spec(" process:2 ")
    'process:2'
    >>> check_executor_spec("process:0")
    Traceback (most recent call last):
    ...
    ValueError: process executor needs a whole number of workers from 1 to 1,024, got 'process:0'
    >>> check_executor_spec("dask://")
    Traceback (most recent call last):
    ...
    ValueError: executor 'dask://' names no scheduler; use 'dask://host:port' (default port 8786)
    """
    if not isinstance(spec, str):
        raise ValueError(f"executor must be a spec string, got {type(spec).__name__}")
    spec = spec.strip()
    if spec == "inline":
        return spec
    if spec == "process" or spec.startswith("process:"):
        _, _, workers = spec.partition(":")
        if spec != "process" and not (workers.isdigit() and 1 <= int(workers) <= MAX_PROCESS_WORKERS):
            raise ValueError(f"process executor needs a whole number of workers from 1 to {MAX_PROCESS_WORKERS:,}, "
                             f"got {spec!r}")
        return spec
    if spec.startswith(("dask://", "tcp://")):
        address = spec.split("://", 1)[1]
        if not address:
            raise ValueError(f"executor {spec!r} names no scheduler; use 'dask://host:port' (default port 8786)")
        if any(c.isspace() for c in address):
            raise ValueError(f"executor {spec!r}: the scheduler's address has a space in it; use 'dask://host:port'")
        scheduler_address(spec)  # host and port, checked
        return spec
    raise ValueError(f"unknown executor {spec!r}; use 'inline', 'process[:N]', 'dask://host:port' or a "
                     "distributed.Client")
