"""Retention of model artifacts by version count: which versions' artifact files were pruned, and which files
are still to be deleted.

``model_versions.artifact_pruned_at`` is set when ``[registry] keep_versions`` (or ``mlma prune --versions``)
pruned the version's artifact; the row stays (history, audit, provenance), and a roll-back, promotion or load
of the version is refused. ``artifact_deletions`` lists the files a prune marked for deletion and has not yet
deleted: a prune is recorded first (the rows marked, the files queued, one transaction), then the files go, and
a prune stopped in between (killed) leaves its queue for the next one.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("artifact_pruned_at", UTC))
    op.create_table(
        "artifact_deletions",
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("queued_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("artifact_sha256", name="pk_artifact_deletions"),
    )


def downgrade() -> None:
    op.drop_table("artifact_deletions")
    op.drop_column("model_versions", "artifact_pruned_at")
