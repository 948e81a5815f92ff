"""Fetch every pretrained file a config needs into the local caches, for offline compute nodes.

`mmimdb-dist prefetch --config X` runs on a machine with internet (a cluster's login node)
and fills the Hugging Face cache (`HF_HOME`, shared with the compute nodes) with the text
encoder, its tokenizer, the vision backbone and its image processor, and the torch hub cache
(`TORCH_HOME`) with torchvision weights. Runs on the compute nodes then set
`HF_HUB_OFFLINE=1` and load from the cache without touching the network (hub.py).

Only what loading needs is downloaded: configs, tokenizer and processor files and the
safetensors weights (a repository's PyTorch .bin, TF, Flax and ONNX copies are skipped when
it has safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, PretrainedUnavailable
from ..hub import hub_offline, is_hub_name, resolve_pretrained

# Files a from_pretrained of a model, tokenizer or image processor reads.
_ALWAYS = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.py"]


@dataclass
class Fetched:
    key: str  # the config key that names it
    name: str
    what: str  # "local folder", "downloaded to <path>", "cached"


def fetch_hub_model(key: str, name: str) -> Fetched:
    """Snapshot of `name`'s loading files into the Hugging Face cache; a local name is left alone."""
    from huggingface_hub import HfApi, snapshot_download

    source = resolve_pretrained(name, key)
    if not is_hub_name(source):
        return Fetched(key, name, f"local folder {source}")
    if hub_offline():
        raise PretrainedUnavailable(
            f"{key}: cannot fetch {name!r}: the hub is off (HF_HUB_OFFLINE); run "
            "prefetch on a machine with internet, without HF_HUB_OFFLINE"
        )
    try:
        files = HfApi().list_repo_files(source)
        weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
        path = snapshot_download(source, allow_patterns=_ALWAYS + weights)
    except Exception as exc:  # huggingface_hub raises many types (HTTP, connection, not found)
        reason = " ".join(str(exc).split())[:300]
        raise PretrainedUnavailable(f"{key}: cannot download {name!r} ({type(exc).__name__}: {reason})") from None
    return Fetched(key, name, f"downloaded to {path}")


def fetch_torchvision_weights(key: str, model_name: str, weights_name: str) -> Fetched:
    """torchvision weights into the torch hub cache (what `get_model(weights=...)` reads)."""
    from torchvision.models import get_model_weights

    try:
        weights = get_model_weights(model_name)[weights_name]
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{key}: {model_name!r} has no weights {weights_name!r} ({exc})") from None
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise PretrainedUnavailable(f"{key}: cannot download torchvision's {weights} ({reason})") from None
    return Fetched(key, f"{model_name} {weights_name}", f"in the torch hub cache ({weights.url.rsplit('/', 1)[-1]})")


def prefetch(cfg: Any) -> list[Fetched]:
    """Everything `cfg` (an ExperimentConfig) loads from a hub or the internet, fetched once."""
    fetched: list[Fetched] = []
    model = cfg.model
    seen: set[str] = set()
    if model.uses_text and model.text.brings_tokenizer:
        # The tokenizer is needed even for random weights; the weights only when pretrained.
        fetched.append(fetch_hub_model("model.text.name", model.text.name))
        seen.add(model.text.name)
    if model.uses_image:
        image = model.image
        if image.kind in ("hf", "clip") and image.name not in seen:
            fetched.append(fetch_hub_model("model.image.name", image.name))
        elif image.kind == "torchvision" and image.pretrained:
            fetched.append(fetch_torchvision_weights("model.image.weights", image.name, image.weights))
        elif image.kind in ("resnet18", "resnet50") and image.pretrained and not image.weights_path:
            fetched.append(fetch_torchvision_weights("model.image.pretrained", image.kind, "IMAGENET1K_V1"))
    return fetched
