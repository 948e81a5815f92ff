"""Which torch device a command runs on: `auto` picks the accelerator when there is one, and a
device that is not there is one clear error before any model is loaded (torch's own failure
is a traceback deep inside the first `.to()`)."""

from __future__ import annotations

from .errors import MmimdbError

AUTO = "auto"


def resolve_device(name: str | None, key: str = "--device") -> str:
    """'auto' (or None) -> 'cuda' when CUDA is available, else 'cpu'; anything else checked."""
    import torch

    if name is None or name == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise MmimdbError(f"{key} {name!r}: not a torch device (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MmimdbError(f"{key} {name}: no CUDA device is available here; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MmimdbError(f"{key} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu", "meta") and not getattr(torch, device.type).is_available():
        raise MmimdbError(f"{key} {name}: no {device.type} device is available here; use --device cpu (or auto)")
    return str(device)
