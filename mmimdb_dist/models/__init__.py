"""Text encoders, vision encoders and fusion heads, all built from `ModelConfig` by the registry.

Importing this package is cheap (no torch): `build_model` loads the registry on first use.
"""

from __future__ import annotations

from typing import Any

from .config import MODEL_NAMES, ModelConfig

__all__ = ["MODEL_NAMES", "ModelConfig", "build_model"]


def build_model(*args: Any, **kwargs: Any) -> Any:
    from .registry import build_model as _build_model

    return _build_model(*args, **kwargs)
