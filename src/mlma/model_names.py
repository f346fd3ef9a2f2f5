"""The names of the built-in models, apart from the models themselves: ``mlma.toml``'s check of ``[model] spec``
runs on every command and must not import the statistics stack (:mod:`mlma.models` takes 0.3 s to import).

>>> "ridge" in BUILTIN_MODELS
True
"""

from __future__ import annotations

#: What :func:`mlma.models.make_forecaster` builds from a plain name (its ``_BUILTINS``, checked equal there).
BUILTIN_MODELS = ("lightgbm", "mean", "ridge", "seasonal-naive")
