"""The engineer's face of mlma: a REST API and a web dashboard over the live store, with access control.

``create_app(project_or_store)`` builds the FastAPI application that ``mlma serve`` runs: JSON endpoints
under ``/api`` (reads for viewers, actions for operators, token management for admins), the dashboard's
static page at ``/``, ``/metrics`` for Prometheus and ``/openapi.json``. Every action calls
:class:`mlma.control.Operations`, the one API the CLI uses too, so that each change is audited the same way
whichever door it came through. See docs/api.md and docs/dashboard.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlma._lazy import lazy_attributes

if TYPE_CHECKING:
    from mlma.api.app import create_app
    from mlma.api.auth import ROLES, Principal, authenticate, create_token, list_tokens, revoke_token

__all__ = ["ROLES", "Principal", "authenticate", "create_app", "create_token", "list_tokens", "revoke_token"]

# The names above load on first use (PEP 562): ``mlma --help`` imports ``mlma.api.cli``, which must not pay
# for FastAPI and SQLAlchemy; ``from mlma.api import create_app`` works as before.
_HOMES = {"mlma.api.app": ("create_app",), "mlma.api.auth": tuple(n for n in __all__ if n != "create_app")}
__getattr__, __dir__ = lazy_attributes(globals(), _HOMES)
