"""Alembic migrations of the store's schema; run them with :meth:`mlma.store.Store.upgrade`."""
