"""The engineer's face of mlma: a REST API and a web dashboard over the live store, with access control.

``create_app(project_or_store)`` builds the FastAPI application that ``mlma serve`` runs: JSON endpoints
under ``/api`` (reads for viewers, actions for operators, token management for admins), the dashboard's
static page at ``/``, ``/metrics`` for Prometheus and ``/openapi.json``. Every action calls
:class:`mlma.control.Operations`, the one API the CLI uses too, so that each change is audited the same way
whichever door it came through. See docs/api.md and docs/dashboard.md.
"""

from mlma.api.app import create_app
from mlma.api.auth import ROLES, Principal, authenticate, create_token, list_tokens, revoke_token

__all__ = ["ROLES", "Principal", "authenticate", "create_app", "create_token", "list_tokens", "revoke_token"]
