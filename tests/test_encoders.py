"""Modern encoders: Hugging Face vision backbones, torchvision classifiers by name, CLIP/SigLIP
dual encoders, their preprocessing, and loading them from the hub cache or failing at once.

Every model is a tiny random one saved as a real model folder (dist_scripts/tiny_encoders.py)
and loaded by path, through the code that loads a hub name; the hub itself is a real HTTP
server on 127.0.0.1 (dist_scripts/hub_server.py). Nothing reaches the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_scripts.hub_server import HubServer
from dist_scripts.tiny_encoders import DUAL, HF_VISION, IMAGE_SIZE, STATS, TEXT_POSITIONS, save_tiny

from mmimdb_dist.data.tokens import build_token_encoder, token_encoder_size
from mmimdb_dist.errors import ConfigError
from mmimdb_dist.models.preprocess import image_preprocessing
from mmimdb_dist.models.registry import build_image_encoder, build_model
from mmimdb_dist.schema import FusionConfig, ImageEncoderConfig, ModelConfig, TextEncoderConfig

GRID = 7


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-encoders")
    return {kind: save_tiny(kind, root / kind) for kind in HF_VISION + DUAL}


def image_config(kind: str, folder: Path, **kwargs) -> ImageEncoderConfig:
    return ImageEncoderConfig(kind="clip" if kind in DUAL else "hf", name=str(folder), patch_grid=GRID, **kwargs)


def pixels(batch: int = 2, size: int = IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- vision backbones


@pytest.mark.parametrize("kind", HF_VISION + DUAL)
def test_hf_backbone_gives_pooled_and_patch_tokens_and_learns(kind: str, folders) -> None:
    encoder = build_image_encoder(image_config(kind, folders[kind]))
    features = encoder(pixels())
    assert features.patches.shape == (2, GRID * GRID, encoder.out_dim)
    assert features.pooled.shape == (2, encoder.out_dim)
    (features.pooled.sum() + features.patches.sum()).backward()
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    assert trainable
    assert sum(p.grad is None for p in trainable) == 0


@pytest.mark.parametrize("kind", HF_VISION + DUAL)
def test_preprocessing_follows_the_backbones_image_processor(kind: str, folders) -> None:
    cfg = image_config(kind, folders[kind])
    preprocessing = image_preprocessing(cfg)
    mean, std = STATS[kind]
    assert preprocessing.size == IMAGE_SIZE
    assert preprocessing.mean == pytest.approx(mean)
    assert preprocessing.std == pytest.approx(std)
    encoder = build_image_encoder(cfg)
    x = pixels()
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(encoder.normalize(x), expected, atol=1e-6)


def test_image_size_and_statistics_are_written_into_the_config(folders) -> None:
    from mmimdb_dist.models.preprocess import resolve_image_size
    from mmimdb_dist.schema import ExperimentConfig, LoaderConfig

    cfg = ExperimentConfig(
        loader=LoaderConfig(image_size=None),
        model=ModelConfig(name="image_only", image=image_config("clip", folders["clip"])),
    )
    resolved = resolve_image_size(cfg)
    assert resolved.loader.image_size == IMAGE_SIZE
    assert resolved.model.image.pixel_mean == pytest.approx(STATS["clip"][0])
    # An explicit size wins; the statistics stay the backbone's.
    sized = resolve_image_size(ExperimentConfig(loader=LoaderConfig(image_size=48), model=cfg.model))
    assert sized.loader.image_size == 48
    assert sized.model.image.pixel_std == pytest.approx(STATS["clip"][1])


def test_a_different_input_size_interpolates_position_embeddings(folders) -> None:
    encoder = build_image_encoder(image_config("vit", folders["vit"]))
    assert encoder(pixels(size=48)).patches.shape == (2, GRID * GRID, 32)


def test_patch_tokens_are_the_grid_without_cls_or_register_tokens() -> None:
    from mmimdb_dist.models.vision import grid_from_tokens

    side, dim = 4, 3
    patches = torch.arange(side * side * dim, dtype=torch.float32).view(1, side * side, dim)
    for prefix in (0, 1, 5):  # SigLIP, ViT's CLS, DINOv2's CLS + 4 registers
        tokens = torch.cat([torch.full((1, prefix, dim), -1.0), patches], dim=1)
        grid = grid_from_tokens(tokens)
        assert grid.shape == (1, dim, side, side)
        assert torch.equal(grid.flatten(2).transpose(1, 2), patches)


@pytest.mark.parametrize("kind", ["vit", "dinov2", "convnext", "clip"])
def test_freeze_layers_freezes_the_embeddings_and_first_blocks(kind: str, folders) -> None:
    encoder = build_image_encoder(image_config(kind, folders[kind], freeze_layers=1))
    frozen = {name for name, p in encoder.named_parameters() if not p.requires_grad}
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert any("embeddings" in name for name in frozen)
    assert trainable
    assert not any("embeddings" in name for name in trainable)
    encoder.train()
    assert all(not module.training for module in encoder.frozen)


def test_freeze_keeps_a_backbone_fixed_and_in_eval_mode(folders) -> None:
    encoder = build_image_encoder(image_config("dinov2", folders["dinov2"], freeze=True))
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    x = pixels()
    assert torch.equal(encoder(x).pooled, encoder(x).pooled)  # no dropout noise


def test_mean_pooling_drops_an_unused_pooler(folders) -> None:
    native_grid = IMAGE_SIZE // 8  # the tiny ViT's 4 x 4 patches, kept as they are
    encoder = build_image_encoder(
        ImageEncoderConfig(kind="hf", name=str(folders["vit"]), pooling="mean", patch_grid=native_grid)
    )
    assert encoder.model.pooler is None
    features = encoder(pixels())
    assert features.patches.shape[1] == native_grid**2
    assert torch.allclose(features.pooled, features.patches.mean(1), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_torchvision_models_by_name(name: str) -> None:
    encoder = build_image_encoder(ImageEncoderConfig(kind="torchvision", name=name, pretrained=False))
    features = encoder(pixels(size=64))
    assert features.patches.shape == (2, GRID * GRID, encoder.out_dim)
    assert features.pooled.shape == (2, encoder.out_dim)
    features.pooled.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())  # no dead classifier layer left


def test_torchvision_preprocessing_comes_from_the_weights_transforms() -> None:
    vit = image_preprocessing(ImageEncoderConfig(kind="torchvision", name="vit_b_16", weights="IMAGENET1K_SWAG_E2E_V1"))
    assert vit.size == 384
    assert "IMAGENET1K_SWAG_E2E_V1" in vit.source
    convnext = image_preprocessing(ImageEncoderConfig(kind="torchvision", name="convnext_tiny"))
    assert convnext.size == 224
    assert convnext.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "torchvision", "name": "no_such_net", "pretrained": False}, "not a torchvision model"),
        ({"kind": "torchvision", "name": "resnet18", "weights": "NOPE"}, "model.image.weights"),
        ({"kind": "hf", "name": ""}, "model.image.name: the hf kind needs a model name"),
        ({"kind": "hf", "name": "x", "freeze_until": "layer2"}, "model.image.freeze_until"),
        ({"kind": "torchvision", "name": "resnet18", "freeze_layers": 2}, "model.image.freeze_layers"),
        ({"kind": "clip", "name": "x", "pixel_std": [0.5, 0.0, 0.5]}, "model.image.pixel_std"),
    ],
)
def test_bad_image_encoder_configs_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_image_encoder(ImageEncoderConfig(**overrides))


def test_a_dual_model_as_an_hf_image_encoder_is_refused(folders) -> None:
    with pytest.raises(ConfigError, match="use model.image.kind: clip"):
        build_image_encoder(ImageEncoderConfig(kind="hf", name=str(folders["clip"])))


# --------------------------------------------------------------------------- dual encoders


def dual_config(kind: str, folders, name: str = "early_fusion", **text) -> ModelConfig:
    folder = str(folders[kind])
    return ModelConfig(
        name=name,
        text=TextEncoderConfig(kind="clip", name=folder, **text),
        image=ImageEncoderConfig(kind="clip", name=folder, patch_grid=GRID),
        fusion=FusionConfig(hidden=16, heads=2),
    )


def padded(rows: list[list[int]], pad_id: int, width: int | None = None) -> torch.Tensor:
    width = width or max(map(len, rows))
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("kind", DUAL)
def test_windowed_tokens_are_real_characters_in_whole_windows(kind: str, folders) -> None:
    encoder = build_token_encoder(dual_config(kind, folders).text)
    assert encoder.window == TEXT_POSITIONS
    plot = "A war movie about love. " * 5  # 120 characters: many windows of 13-14
    ids = encoder.encode(plot, max_length=4 * TEXT_POSITIONS)
    assert len(ids) == 4 * TEXT_POSITIONS  # capped at max_length // window windows
    tokenizer = encoder.tokenizer
    for start in range(0, len(ids), TEXT_POSITIONS):
        window = ids[start : start + TEXT_POSITIONS]
        assert window[: len(encoder.prefix)] == encoder.prefix
        text = tokenizer.decode(window, skip_special_tokens=True).replace(" ", "")
        assert text
        assert set(text) <= set(plot.lower().replace(" ", ""))
    assert tokenizer.unk_token_id not in ids[len(encoder.prefix) : encoder.window - 1] or kind == "clip"
    short = encoder.encode("war", max_length=512)
    assert len(short) == TEXT_POSITIONS
    assert tokenizer.decode(short, skip_special_tokens=True).strip() == "war"


@pytest.mark.parametrize("kind", DUAL)
def test_dual_text_encoder_averages_its_windows_and_ignores_padding_windows(kind: str, folders) -> None:
    cfg = dual_config(kind, folders)
    tokens = build_token_encoder(cfg.text)
    torch.manual_seed(0)
    model = build_model(cfg, num_labels=23, vocab_size=token_encoder_size(tokens), pad_id=tokens.pad_id).eval()
    text = model.text_encoder
    plot = tokens.encode("A lonely soldier falls in love with a spy during the war. " * 2, 512)
    windows = len(plot) // TEXT_POSITIONS
    assert windows >= 3
    with torch.no_grad():
        whole = text(padded([plot], tokens.pad_id), None)
        each = [
            text(padded([plot[i * TEXT_POSITIONS : (i + 1) * TEXT_POSITIONS]], tokens.pad_id), None).pooled
            for i in range(windows)
        ]
        with_padding = text(padded([plot, plot[:TEXT_POSITIONS]], tokens.pad_id), None)
    assert torch.allclose(whole.pooled, torch.stack(each).mean(0), atol=1e-5)
    assert whole.tokens.shape == (1, windows, text.out_dim)
    assert bool(whole.mask.all())
    assert torch.allclose(with_padding.pooled[0], whole.pooled[0], atol=1e-5)
    assert with_padding.mask[1].tolist() == [True] + [False] * (windows - 1)


@pytest.mark.parametrize("kind", DUAL)
def test_one_checkpoint_serves_both_towers_with_its_weights(kind: str, folders) -> None:
    from safetensors.torch import load_file

    cfg = dual_config(kind, folders)
    assert cfg.shares_dual_encoder
    tokens = build_token_encoder(cfg.text)
    model = build_model(cfg, num_labels=23, vocab_size=token_encoder_size(tokens), pad_id=tokens.pad_id)
    saved = load_file(str(folders[kind] / "model.safetensors"))
    state = model.state_dict()
    checked = 0
    for key, value in saved.items():
        for side, tower in (("text_model.", "text_encoder.tower."), ("vision_model.", "image_encoder.tower.")):
            if key.startswith(side) and tower + key[len(side) :] in state:
                assert torch.equal(state[tower + key[len(side) :]], value), key
                checked += 1
    assert checked > 20
    if kind == "clip":  # the joint-space projections, as pretrained
        assert torch.equal(state["text_encoder.projection.weight"], saved["text_projection.weight"])
        assert model.text_encoder.out_dim == model.image_encoder.out_dim == 24


@pytest.mark.parametrize("kind", DUAL)
def test_attention_fusion_over_dual_windows_and_patches(kind: str, folders) -> None:
    cfg = dual_config(kind, folders, name="attention_fusion")
    tokens = build_token_encoder(cfg.text)
    model = build_model(cfg, num_labels=23, vocab_size=token_encoder_size(tokens), pad_id=tokens.pad_id)
    ids = padded([tokens.encode("war " * n, 512) for n in (1, 12)], tokens.pad_id)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels()}
    out = model(batch)
    windows = ids.shape[1] // TEXT_POSITIONS
    assert out["logits"].shape == (2, 23)
    assert out["attention"].shape == (2, 2, windows, GRID * GRID)
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_dual_towers_must_agree_on_pretraining(folders) -> None:
    with pytest.raises(ConfigError, match="model.image.pretrained"):
        ModelConfig(
            name="early_fusion",
            text=TextEncoderConfig(kind="clip", name="x", pretrained=False),
            image=ImageEncoderConfig(kind="clip", name="x", pretrained=True),
        )


# --------------------------------------------------------------------------- hub, cache, prefetch


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmimdb_dist.cli", *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd
    )


def test_offline_and_not_cached_is_one_line_naming_prefetch_at_once(tmp_path) -> None:
    import yaml

    config = tmp_path / "clip.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "image_only", "image": {"kind": "hf", "name": "some-org/absent"}},
                "loader": {"shards_dir": str(tmp_path)},
            }
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    with HubServer({}) as hub:  # would answer, and log, any request
        result = _cli("train", "--config", str(config), env={**env, "HF_ENDPOINT": hub.url}, cwd=tmp_path)
        assert hub.requests == []
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "model.image.name: 'some-org/absent' is not in the Hugging Face cache" in lines[0]
    assert "mmimdb-dist prefetch --config" in lines[0]


def test_prefetch_fills_the_cache_then_runs_work_offline(folders, tmp_path) -> None:
    """prefetch against a hub on 127.0.0.1; then, hub gone and HF_HUB_OFFLINE=1, the same config's
    model, tokenizer and preprocessing load from the cache alone."""
    import yaml

    config = tmp_path / "dual.yaml"
    model = {
        "name": "early_fusion",
        "text": {"kind": "clip", "name": "tiny-org/clip"},
        "image": {"kind": "clip", "name": "tiny-org/clip"},
    }
    config.write_text(yaml.safe_dump({"model": model}))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
    with HubServer({"tiny-org/clip": folders["clip"]}) as hub:
        result = _cli("prefetch", "--config", str(config), env={**env, "HF_ENDPOINT": hub.url}, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "model.text.name tiny-org/clip: downloaded to" in result.stdout
        fetched = {r.rsplit("/", 1)[-1] for r in hub.requests if r.startswith("GET /tiny-org/clip/resolve/")}
        assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= fetched
    probe = (
        "import sys, torch\n"
        "from mmimdb_dist.schema import load_config\n"
        "from mmimdb_dist.data.tokens import build_token_encoder, token_encoder_size\n"
        "from mmimdb_dist.models.registry import build_model\n"
        "from mmimdb_dist.models.preprocess import resolve_image_size\n"
        "cfg = resolve_image_size(load_config(sys.argv[1]))\n"
        "tok = build_token_encoder(cfg.model.text)\n"
        "m = build_model(cfg.model, num_labels=23, vocab_size=token_encoder_size(tok), pad_id=tok.pad_id)\n"
        "print(cfg.loader.image_size, tok.window, round(float(m.image_encoder.pixel_mean[0, 0]), 4))\n"
    )
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-c", probe, str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env=offline,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(IMAGE_SIZE), str(TEXT_POSITIONS), str(round(STATS["clip"][0][0], 4))]


def test_prefetch_of_local_folders_fetches_nothing(folders, tmp_path) -> None:
    import yaml

    config = tmp_path / "local.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "name": "early_fusion",
                    "text": {"kind": "bilstm"},
                    "image": {"kind": "hf", "name": str(folders["vit"])},
                }
            }
        )
    )
    result = _cli("prefetch", "--config", str(config), env=dict(os.environ), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"model.image.name {folders['vit']}: local folder" in result.stdout


# --------------------------------------------------------------------------- shipped recipes

REPO = Path(__file__).resolve().parents[1]
# Which tiny family stands in for each hub checkpoint the recipes name.
STAND_INS = {
    "google/siglip-so400m-patch14-384": "siglip",
    "openai/clip-vit-large-patch14": "clip",
    "facebook/dinov2-base": "dinov2",
}


def test_recipe_configs_build_with_tiny_stand_ins(folders) -> None:
    """Every shipped config with a hub vision or dual encoder builds and runs with a tiny model of
    the same family in place of the checkpoint, all its other settings (freezing, pooling,
    windows, fusion) as shipped."""
    from dataclasses import replace

    from mmimdb_dist.schema import load_config

    recipes = []
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        if cfg.model.image.kind not in ("hf", "clip") and cfg.model.text.kind != "clip":
            continue
        recipes.append(path.stem)
        model = cfg.model
        stand_in = str(folders[STAND_INS[model.image.name]])
        image = replace(model.image, name=stand_in, freeze_layers=min(model.image.freeze_layers, 1))
        text = model.text
        if text.kind == "clip":
            text = replace(text, name=stand_in, freeze_layers=min(text.freeze_layers, 1))
        else:  # a text encoder of another family: a tiny random one of its kind
            text = replace(
                text,
                name="distilbert-base-uncased",
                pretrained=False,
                hf_config={"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
            )
        model = replace(model, text=text, image=image, fusion=replace(model.fusion, hidden=16, heads=2))
        if text.kind == "clip":
            tokens = build_token_encoder(text)
            ids = padded([tokens.encode("a war movie " * n, cfg.loader.max_text_length) for n in (1, 9)], tokens.pad_id)
            vocab_size, pad_id = token_encoder_size(tokens), tokens.pad_id
        else:
            ids, vocab_size, pad_id = torch.randint(1, 90, (2, 12)), 100, 0
        net = build_model(model, num_labels=23, vocab_size=vocab_size, pad_id=pad_id)
        out = net({"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels()})
        assert out["logits"].shape == (2, 23), path.name
        assert torch.isfinite(out["logits"]).all(), path.name
    assert {"siglip_fusion", "clip_large_fusion", "dinov2_fusion"} <= set(recipes)


@pytest.mark.parametrize("kind", [*HF_VISION, *DUAL, "torchvision"])
def test_every_trainable_parameter_of_a_fusion_model_gets_a_gradient(kind: str, folders) -> None:
    """What lets DDP run without its per-step unused-parameter search (train.find_unused_parameters):
    each image family, in a fusion model, leaves no trainable parameter out of a step."""
    if kind in DUAL:
        cfg = dual_config(kind, folders)
    else:
        image = (
            ImageEncoderConfig(kind="torchvision", name="resnet18", pretrained=False, patch_grid=GRID)
            if kind == "torchvision"
            else image_config(kind, folders[kind])
        )
        cfg = ModelConfig(
            name="early_fusion",
            text=TextEncoderConfig(kind="bilstm", embed_dim=8, hidden=8, vocab_min_freq=1),
            image=image,
            fusion=FusionConfig(hidden=16, heads=2),
            modality_dropout=0.1,
        )
    tokens = build_token_encoder(cfg.text, ["a war movie about love"])
    model = build_model(cfg, num_labels=23, vocab_size=token_encoder_size(tokens), pad_id=tokens.pad_id).train()
    ids = padded([tokens.encode("a war movie about love " * n, 512) for n in (1, 3)], tokens.pad_id)
    out = model({"input_ids": ids, "attention_mask": (ids != tokens.pad_id).long(), "pixel_values": pixels()})
    out["logits"].sum().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert not type(model).leaves_parameters_unused


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_a_checkpoint_saved_in_half_precision_loads_in_float32(kind: str, folders, tmp_path) -> None:
    """transformers 5 loads weights in the dtype they were saved in: an fp16 checkpoint would
    train without an fp32 master copy (and fp16 loss scaling refuses half-precision weights)."""
    from transformers import AutoModel

    half = tmp_path / f"{kind}-fp16"
    AutoModel.from_pretrained(str(folders[kind])).half().save_pretrained(str(half))
    for name in (
        "preprocessor_config.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
    ):
        if (folders[kind] / name).is_file():
            (half / name).write_bytes((folders[kind] / name).read_bytes())
    assert AutoModel.from_pretrained(str(half)).dtype == torch.float16  # what "auto" would give
    encoder = build_image_encoder(image_config(kind, half))
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}


def test_a_mistyped_local_folder_is_named_as_a_missing_folder(tmp_path, monkeypatch) -> None:
    """`./models/tiny-vitt` (a typo of a local folder) is not a hub id: the line says the folder
    does not exist, instead of sending the user to fill a cache that could never hold it."""
    from mmimdb_dist.errors import PretrainedUnavailable
    from mmimdb_dist.hub import load_hf_config

    monkeypatch.chdir(tmp_path)
    for name in ("./models/tiny-vitt", str(tmp_path / "models" / "tiny-vitt"), "models/x/tiny-vitt"):
        with pytest.raises(PretrainedUnavailable) as caught:
            load_hf_config("model.image.name", name)
        assert str(caught.value) == (
            f"model.image.name: {name!r}: the folder {Path(name)} does not exist (a hub name is <org>/<model>)"
        )


def test_a_hub_that_is_not_there_or_a_missing_repository_fails_at_once(tmp_path, monkeypatch) -> None:
    """Without HF_HUB_OFFLINE, a refused hub was retried five times (about a minute, each warning
    twice) and a missing name ended in a traceback: one request now, and one line."""
    from dist_scripts.ports import free_port
    from huggingface_hub import constants

    from mmimdb_dist.errors import PretrainedUnavailable
    from mmimdb_dist.hub import load_hf_config

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with HubServer({}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        with pytest.raises(PretrainedUnavailable) as caught:
            load_hf_config("model.image.name", "some-org/absent")
        assert hub.requests == ["HEAD /api/models/some-org/absent"]
    assert str(caught.value) == (
        f"model.image.name: 'some-org/absent' is not on the Hugging Face hub at {hub.url} (HTTP 404: a "
        "mistyped name, or a private repository without a token: HF_TOKEN)"
    )
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    with pytest.raises(PretrainedUnavailable) as caught:
        load_hf_config("model.image.name", "some-org/absent")
    assert str(caught.value).startswith(
        f"model.image.name: 'some-org/absent': the Hugging Face hub at {closed} is not reachable from here ("
    )
    assert "mmimdb-dist prefetch --config" in str(caught.value)
