"""Text encoders, vision encoders and fusion heads, all built from `ModelConfig` by the registry.

Importing this package is cheap (no torch): `build_model` loads the registry, and with it
torch, on first use, so `mmimdb_dist.models.build_model` can be named in code that may never
build a model. The config section is `schema/model.py`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_model"]


def build_model(*args: Any, **kwargs: Any) -> Any:
    from .registry import build_model as _build_model

    return _build_model(*args, **kwargs)
