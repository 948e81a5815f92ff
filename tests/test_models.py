"""Models: padding invariance, gradient flow, missing modalities, freezing, patch tokens, registry.

Everything runs on CPU with tiny encoders (a small BiLSTM, a 4-block CNN with few channels, a
2-layer DistilBERT/BERT built from a config) and a WordPiece tokenizer trained here, so
nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmimdb_dist.data.sources.mmimdb.genres import NUM_GENRES
from mmimdb_dist.data.tokens import build_token_encoder, token_encoder_size
from mmimdb_dist.errors import ConfigError, DataError
from mmimdb_dist.models.registry import MODELS, build_model, count_parameters
from mmimdb_dist.models.text import HFEncoder
from mmimdb_dist.models.vision import ResNetEncoder, SimpleCNNEncoder
from mmimdb_dist.schema import (
    FREEZE_LEVELS,
    MODEL_NAMES,
    FusionConfig,
    ImageEncoderConfig,
    ModelConfig,
    TextEncoderConfig,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]
VOCAB_SIZE, PAD_ID = 50, 0
FUSIONS = ("early_fusion", "late_fusion", "attention_fusion", "gmu")
TINY_HF = {
    "distilbert": {
        "model_type": "distilbert",
        "dim": 32,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dim": 64,
        "max_position_embeddings": 64,
    },
    "bert": {
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    },
}


def tiny_config(
    name: str,
    text_kind: str = "bilstm",
    pooling: str = "mean",
    dropout: float = 0.1,
    modality_dropout: float = 0.0,
    arch: str = "distilbert",
) -> ModelConfig:
    text = TextEncoderConfig(
        kind=text_kind,
        embed_dim=16,
        hidden=8,
        attention_dim=8,
        dropout=dropout,
        pretrained=False,
        pooling=pooling,
        hf_config=dict(TINY_HF[arch]) if text_kind == "hf" else {},
    )
    image = ImageEncoderConfig(kind="cnn", cnn_channels=[4, 8, 8, 8])
    return ModelConfig(
        name=name,
        text=text,
        image=image,
        fusion=FusionConfig(hidden=16, heads=2, dropout=dropout),
        modality_dropout=modality_dropout,
    )


def tiny_model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_config(name, **kwargs), num_labels=23, vocab_size=VOCAB_SIZE, pad_id=PAD_ID)


def make_batch(lengths: list[int], extra_padding: int = 0, image_size: int = 64, seed: int = 0) -> dict:
    """Random real tokens (never the pad id), padded to the longest plot plus `extra_padding`."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths) + extra_padding
    input_ids = torch.full((len(lengths), width), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(2, VOCAB_SIZE, (length,), generator=gen)
        attention_mask[row, :length] = 1
    pixel_values = torch.randn(len(lengths), 3, image_size, image_size, generator=gen)
    labels = (torch.rand(len(lengths), NUM_GENRES, generator=gen) < 0.2).float()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values, "labels": labels}


def with_extra_padding(batch: dict, extra: int) -> dict:
    padded = dict(batch)
    rows = batch["input_ids"].shape[0]
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.full((rows, extra), PAD_ID)], dim=1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(rows, extra, dtype=torch.long)], 1)
    return padded


@torch.no_grad()
def eval_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    return model(batch)["logits"]


# --------------------------------------------------------------------------- padding invariance

PADDING_CASES = [(name, "bilstm", "mean") for name in ("text_only", *FUSIONS)] + [
    ("text_only", "hf", "mean"),
    ("text_only", "hf", "cls"),
    ("attention_fusion", "hf", "mean"),
    ("gmu", "hf", "cls"),
]


@pytest.mark.parametrize(("name", "text_kind", "pooling"), PADDING_CASES)
def test_appending_padding_never_changes_the_output(name: str, text_kind: str, pooling: str) -> None:
    model = tiny_model(name, text_kind=text_kind, pooling=pooling)
    batch = make_batch([7, 3, 12, 1])
    reference = eval_logits(model, batch)
    for extra in (1, 9):
        padded = with_extra_padding(batch, extra)
        assert padded["input_ids"].shape[1] == 12 + extra
        torch.testing.assert_close(eval_logits(model, padded), reference, atol=1e-5, rtol=0)
    # The output does depend on the real tokens: the invariance above is not vacuous.
    changed = dict(batch, input_ids=batch["input_ids"].clone())
    changed["input_ids"][0, :7] = torch.arange(2, 9)
    assert (eval_logits(model, changed)[0] - reference[0]).abs().max() > 1e-6
    torch.testing.assert_close(eval_logits(model, changed)[1:], reference[1:], atol=1e-5, rtol=0)


def test_bilstm_features_of_real_tokens_ignore_padding() -> None:
    model = tiny_model("text_only")
    model.eval()
    batch = make_batch([5, 2])
    with torch.no_grad():
        short = model.text_encoder(batch["input_ids"], batch["attention_mask"])
        padded = with_extra_padding(batch, 6)
        long = model.text_encoder(padded["input_ids"], padded["attention_mask"])
    torch.testing.assert_close(long.tokens[:, :5], short.tokens, atol=1e-6, rtol=0)
    assert long.tokens[:, 5:].abs().max() == 0  # packed sequences leave padding positions at zero
    torch.testing.assert_close(long.pooled, short.pooled, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- gradients, missing modalities


@pytest.mark.parametrize(("name", "text_kind"), [(n, "bilstm") for n in FUSIONS] + [("attention_fusion", "hf")])
def test_gradients_reach_both_encoders(name: str, text_kind: str) -> None:
    model = tiny_model(name, text_kind=text_kind)
    model.train()
    batch = make_batch([6, 4, 9])
    out = model(batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], batch["labels"])
    for logits in out.get("branch_logits", {}).values():
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
    loss.backward()
    text_param = model.text_encoder.get_parameter(
        "embedding.weight" if text_kind == "bilstm" else "model.embeddings.word_embeddings.weight"
    )
    image_param = model.image_encoder.get_parameter("features.0.weight")
    assert text_param.grad is not None
    assert text_param.grad.norm() > 0
    assert image_param.grad is not None
    assert image_param.grad.norm() > 0
    if text_kind == "bilstm":  # the padding row never learns
        assert text_param.grad[PAD_ID].abs().max() == 0


@pytest.mark.parametrize(
    ("name", "text_kind", "arch"),
    [(n, "bilstm", "distilbert") for n in ("text_only", "image_only", *FUSIONS)]
    + [("early_fusion", "hf", "bert"), ("attention_fusion", "hf", "distilbert")],
)
def test_every_parameter_takes_part_in_a_training_step(name: str, text_kind: str, arch: str) -> None:
    """What distributed data parallel needs: no trainable parameter is left without a gradient,
    including the missing-modality embeddings on a batch where nothing is missing."""
    model = tiny_model(name, text_kind=text_kind, arch=arch)
    model.train()
    out = model(make_batch([4, 7]))
    loss = out["logits"].sum() + sum(logits.sum() for logits in out.get("branch_logits", {}).values())
    loss.backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_grad == []
    if name in FUSIONS:
        assert model.missing_text.grad.abs().max() == 0
        assert model.missing_image.grad.abs().max() == 0


@pytest.mark.parametrize("name", FUSIONS)
def test_missing_modality_is_replaced_not_read(name: str) -> None:
    model = tiny_model(name)
    batch = make_batch([5, 8, 3])
    batch["text_present"] = torch.tensor([True, False, True])
    batch["image_present"] = torch.tensor([True, True, False])
    logits = eval_logits(model, batch)
    assert logits.shape == (3, NUM_GENRES)
    assert torch.isfinite(logits).all()
    # Row 1 has no plot and row 2 no poster: changing that content changes nothing.
    scrambled = dict(batch, input_ids=batch["input_ids"].clone(), pixel_values=batch["pixel_values"].clone())
    scrambled["input_ids"][1] = torch.randint(2, VOCAB_SIZE, (8,))
    scrambled["pixel_values"][2] = torch.randn(3, 64, 64)
    torch.testing.assert_close(eval_logits(model, scrambled), logits, atol=1e-5, rtol=0)
    # ... while the same change on a row that has both modalities does change it.
    scrambled["input_ids"][0, :5] = torch.arange(2, 7)
    assert (eval_logits(model, scrambled)[0] - logits[0]).abs().max() > 1e-6


@pytest.mark.parametrize(
    ("name", "text_kind", "arch"),
    [("gmu", "bilstm", "distilbert"), ("attention_fusion", "hf", "bert"), ("early_fusion", "hf", "distilbert")],
)
def test_a_plot_sent_as_all_padding_gives_finite_outputs_and_gradients(name: str, text_kind: str, arch: str) -> None:
    model = tiny_model(name, text_kind=text_kind, arch=arch)
    batch = make_batch([5, 3])
    batch["input_ids"][1] = PAD_ID
    batch["attention_mask"][1] = 0
    batch["text_present"] = torch.tensor([True, False])
    model.train()
    out = model(batch)
    assert torch.isfinite(out["logits"]).all()
    out["logits"].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(eval_logits(model, batch)).all()


@pytest.mark.parametrize("name", FUSIONS)
def test_absent_batch_key_equals_all_samples_missing(name: str) -> None:
    model = tiny_model(name)
    batch = make_batch([4, 6])
    no_text = {"pixel_values": batch["pixel_values"]}
    no_image = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    flagged_text = dict(batch, text_present=torch.tensor([False, False]))
    flagged_image = dict(batch, image_present=torch.tensor([False, False]))
    for absent, flagged in ((no_text, flagged_text), (no_image, flagged_image)):
        logits = eval_logits(model, absent)
        assert logits.shape == (2, NUM_GENRES)
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(logits, eval_logits(model, flagged), atol=1e-5, rtol=0)
    # With one modality always missing, the model still tells samples apart by the other.
    assert (eval_logits(model, no_text)[0] - eval_logits(model, no_text)[1]).abs().max() > 1e-6


def test_unimodal_models_ignore_the_other_modality() -> None:
    text_model, image_model = tiny_model("text_only"), tiny_model("image_only")
    assert text_model.image_encoder is None
    assert image_model.text_encoder is None
    batch = make_batch([3, 5])
    text_logits = eval_logits(text_model, batch)
    torch.testing.assert_close(eval_logits(text_model, dict(batch, pixel_values=-batch["pixel_values"])), text_logits)
    image_logits = eval_logits(image_model, {"pixel_values": batch["pixel_values"]})
    torch.testing.assert_close(eval_logits(image_model, batch), image_logits)
    assert torch.isfinite(eval_logits(text_model, {"pixel_values": batch["pixel_values"]})).all()


def test_modality_dropout_hides_exactly_one_modality() -> None:
    model = tiny_model("early_fusion", modality_dropout=1.0)
    torch.manual_seed(1)
    n = 4000
    both = torch.ones(n, dtype=torch.bool)
    text_kept, image_kept = model._drop_modality(both, both)
    assert not (text_kept & image_kept).any()
    assert (text_kept | image_kept).all()
    assert 0.45 < text_kept.float().mean() < 0.55
    # A sample already missing its poster never loses its plot as well.
    text_only = torch.ones(n, dtype=torch.bool)
    no_image = torch.zeros(n, dtype=torch.bool)
    text_kept, image_kept = model._drop_modality(text_only, no_image)
    assert text_kept.all()
    assert not image_kept.any()
    model.modality_dropout = 0.3
    text_kept, image_kept = model._drop_modality(both, both)
    assert 0.25 < (~(text_kept & image_kept)).float().mean() < 0.35
    assert (text_kept | image_kept).all()


def test_modality_dropout_acts_at_train_time_only() -> None:
    model = tiny_model("gmu", modality_dropout=1.0, dropout=0.0)
    batch = make_batch([4, 7, 2, 5])
    model.train()
    torch.manual_seed(3)
    dropped = model(batch)["logits"].detach()
    model.modality_dropout = 0.0
    no_text = model(dict(batch, text_present=torch.zeros(4, dtype=torch.bool)))["logits"].detach()
    no_image = model(dict(batch, image_present=torch.zeros(4, dtype=torch.bool)))["logits"].detach()
    for row in range(4):  # every row is exactly one of the two single-modality outputs
        matches = [torch.allclose(dropped[row], ref[row], atol=1e-5) for ref in (no_text, no_image)]
        assert sum(matches) == 1, row
    model.modality_dropout = 1.0
    full = eval_logits(model, batch)
    model.modality_dropout = 0.0
    torch.testing.assert_close(eval_logits(model, batch), full)


# --------------------------------------------------------------------------- fusion specifics


def test_late_fusion_mixes_branch_logits_with_softmax_weights() -> None:
    model = tiny_model("late_fusion")
    assert model.branch_loss_weight == 0.5
    with torch.no_grad():
        model.branch_weight_logits.copy_(torch.tensor([1.0, -1.0]))
    model.eval()
    with torch.no_grad():
        out = model(make_batch([5, 2, 7]))
    weights = torch.softmax(torch.tensor([1.0, -1.0]), 0)
    torch.testing.assert_close(out["branch_weights"], weights)
    expected = weights[0] * out["branch_logits"]["text"] + weights[1] * out["branch_logits"]["image"]
    torch.testing.assert_close(out["logits"], expected)
    assert out["branch_logits"]["text"].shape == out["branch_logits"]["image"].shape == (3, NUM_GENRES)


def test_attention_fusion_attends_over_49_patches_and_real_tokens() -> None:
    model = tiny_model("attention_fusion")
    model.eval()
    with torch.no_grad():
        out = model(make_batch([6, 2, 9], image_size=224))
    text_to_image, image_to_text = out["attention"], out["image_to_text_attention"]
    assert text_to_image.shape == (3, 2, 9, 49)  # B x heads x L x patches
    torch.testing.assert_close(text_to_image.sum(-1), torch.ones(3, 2, 9))
    assert image_to_text.shape == (3, 2, 49, 9)
    assert image_to_text[1, :, :, 2:].abs().max() == 0  # padded words get no attention
    torch.testing.assert_close(image_to_text.sum(-1), torch.ones(3, 2, 49))
    assert text_to_image.std() > 0  # patches are distinct, so attention is not uniform


@pytest.mark.parametrize("name", ["text_only", "image_only", "early_fusion", "late_fusion", "attention_fusion", "gmu"])
def test_output_bias_starts_at_the_genre_frequencies(name: str) -> None:
    from mmimdb_dist.models.fusion import ClassifierHead

    model = tiny_model(name, dropout=0.0)
    rate = torch.linspace(0.02, 0.6, NUM_GENRES)
    model.init_output_bias(rate)
    # With the output weights of every head zeroed (late fusion: both branches), the model
    # predicts exactly the frequencies.
    heads = [module for module in model.modules() if isinstance(module, ClassifierHead)]
    assert len(heads) == (2 if name == "late_fusion" else 1)
    for head in heads:
        torch.nn.init.zeros_(head.linear.weight)
        torch.nn.init.zeros_(head.mlp[-1].weight)
    probs = torch.sigmoid(eval_logits(model, make_batch([3, 5])))
    torch.testing.assert_close(probs, rate.expand(2, -1), atol=1e-5, rtol=0)


def test_gmu_follows_the_published_equations() -> None:
    model = tiny_model("gmu")
    model.eval()
    batch = make_batch([4, 6])
    with torch.no_grad():
        text, image = model.encode(batch)
        out = model.head(text, image)
        h_t = torch.tanh(text.pooled @ model.text_hidden.weight.T)
        h_v = torch.tanh(image.pooled @ model.image_hidden.weight.T)
        z = torch.sigmoid(torch.cat([text.pooled, image.pooled], -1) @ model.gate.weight.T)
        expected = model.classifier(z * h_t + (1 - z) * h_v)
    torch.testing.assert_close(out["gate"], z)
    torch.testing.assert_close(out["logits"], expected)
    assert ((z > 0) & (z < 1)).all()


# --------------------------------------------------------------------------- vision encoders


@pytest.mark.parametrize(("kind", "channels"), [("resnet18", 512), ("resnet50", 2048), ("cnn", 256)])
def test_vision_encoders_give_49_patch_tokens_for_224_input(kind: str, channels: int) -> None:
    torch.manual_seed(0)
    encoder = (
        ResNetEncoder(ImageEncoderConfig(kind=kind))
        if kind != "cnn"
        else SimpleCNNEncoder(ImageEncoderConfig(kind="cnn"))
    )
    encoder.eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 224, 224))
        # Other sizes are pooled onto the same 7 x 7 grid.
        other_size = encoder(torch.randn(1, 3, 96, 96))
    assert features.patches.shape == (1, 49, channels)
    assert encoder.out_dim == channels
    assert features.pooled.shape == (1, channels)
    torch.testing.assert_close(features.pooled, features.patches.mean(1), atol=1e-5, rtol=1e-5)
    assert other_size.patches.shape == (1, 49, channels)


@pytest.mark.parametrize("level", FREEZE_LEVELS)
def test_resnet_freezing_freezes_exactly_up_to_the_named_stage(level: str) -> None:
    encoder = ResNetEncoder(ImageEncoderConfig(kind="resnet18", freeze_until=level))
    stages = dict(zip(("stem", "layer1", "layer2", "layer3", "layer4"), encoder._stages(), strict=True))
    frozen_names = list(stages)[: FREEZE_LEVELS.index(level)]
    expected_frozen = sum(p.numel() for n in frozen_names for p in stages[n].parameters())
    trainable, total = count_parameters(encoder)
    assert total - trainable == expected_frozen
    for name, stage in stages.items():
        flags = {p.requires_grad for p in stage.parameters()}
        assert flags == ({False} if name in frozen_names else {True}), name
    # Frozen BatchNorm stays in eval mode during training and keeps its running statistics.
    encoder.train()
    before = {
        n: s.state_dict()["1.running_mean" if n == "stem" else "0.bn1.running_mean"].clone() for n, s in stages.items()
    }
    encoder(torch.randn(2, 3, 64, 64))
    for name, stage in stages.items():
        bns = [m for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(m.training == (name not in frozen_names) for m in bns), name
        after = stage.state_dict()["1.running_mean" if name == "stem" else "0.bn1.running_mean"]
        assert torch.equal(after, before[name]) == (name in frozen_names), name


def test_resnet_loads_a_local_weights_file(tmp_path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(5)
    source = resnet18()
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    encoder = ResNetEncoder(ImageEncoderConfig(kind="resnet18", weights_path=str(path)))
    assert torch.equal(encoder.stem[0].weight, source.conv1.weight)
    assert torch.equal(encoder.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)

    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(DataError, match="missing keys") as info:
        ResNetEncoder(ImageEncoderConfig(kind="resnet18", weights_path=str(tmp_path / "partial.pt")))
    assert "partial.pt" in str(info.value)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(DataError, match="junk.pt"):
        ResNetEncoder(ImageEncoderConfig(kind="resnet18", weights_path=str(tmp_path / "junk.pt")))
    with pytest.raises(ConfigError, match="weights_path"):
        ResNetEncoder(ImageEncoderConfig(kind="resnet18", weights_path=str(tmp_path / "absent.pt")))


# --------------------------------------------------------------------------- Hugging Face encoders


@pytest.fixture(scope="module")
def wordpiece_folder(tmp_path_factory) -> Path:
    """A WordPiece tokenizer trained here on real plots, saved as a Hugging Face folder."""
    from dist_scripts.wordpiece import train_wordpiece
    from real_plots import load_real_plots_split

    folder = tmp_path_factory.mktemp("wordpiece")
    train_wordpiece(load_real_plots_split().train_texts[:300], folder, vocab_size=400)
    return folder


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_hf_encoder_with_a_local_tokenizer_end_to_end(wordpiece_folder: Path, pooling: str) -> None:
    from mmimdb_dist.data.text import HFTokenEncoder

    encoder = HFTokenEncoder.from_pretrained(wordpiece_folder)
    tokenizer = encoder.tokenizer
    plots = [
        "A detective hunts a killer through the city at night.",
        "Two friends fall in love during a long summer in a small town by the sea.",
    ]
    ids = [encoder.encode(plot, max_length=24) for plot in plots]
    unk = tokenizer.unk_token_id
    assert all(sum(i != unk for i in seq) > len(seq) // 2 for seq in ids)  # real word pieces
    assert all(seq[0] == tokenizer.cls_token_id and seq[-1] == tokenizer.sep_token_id for seq in ids)
    assert encoder.pad_id == tokenizer.pad_token_id

    cfg = replace(
        tiny_config("text_only", text_kind="hf", pooling=pooling),
        text=replace(tiny_config("text_only", text_kind="hf", pooling=pooling).text, name=str(wordpiece_folder)),
    )
    torch.manual_seed(0)
    model = build_model(cfg, num_labels=23, vocab_size=len(tokenizer), pad_id=encoder.pad_id)
    assert model.text_encoder.model.get_input_embeddings().num_embeddings == len(tokenizer)
    width = max(map(len, ids))
    batch = {
        "input_ids": torch.tensor([s + [encoder.pad_id] * (width - len(s)) for s in ids]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids]),
    }
    reference = eval_logits(model, batch)
    assert reference.shape == (2, NUM_GENRES)
    torch.testing.assert_close(eval_logits(model, with_extra_padding(batch, 5)), reference, atol=1e-5, rtol=0)


def test_token_encoder_built_from_the_text_config(wordpiece_folder: Path) -> None:
    plots = ["A cop hunts a killer.", "The killer hunts a cop in the city.", "A cop falls in love."]
    bilstm = tiny_config("text_only").text
    vocab = build_token_encoder(replace(bilstm, vocab_min_freq=2), plots)
    assert vocab.itos[2:] == ["a", "cop", "hunts", "in", "killer", "the"]  # by count, then a-z
    hf_cfg = replace(tiny_config("text_only", text_kind="hf").text, name=str(wordpiece_folder))
    wordpiece = build_token_encoder(hf_cfg)
    assert token_encoder_size(vocab) == len(vocab)
    assert token_encoder_size(wordpiece) == 400
    for cfg, encoder in ((bilstm, vocab), (hf_cfg, wordpiece)):
        model_cfg = replace(tiny_config("text_only"), text=cfg)
        model = build_model(model_cfg, num_labels=23, vocab_size=token_encoder_size(encoder), pad_id=encoder.pad_id)
        ids = encoder.encode(plots[1], max_length=16)
        batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        assert eval_logits(model, batch).shape == (1, NUM_GENRES)
    with pytest.raises(ConfigError, match="vocabulary would be empty"):
        build_token_encoder(bilstm, [])


@pytest.mark.parametrize("arch", ["distilbert", "bert"])
def test_hf_freezing_freezes_embeddings_and_first_layers(arch: str) -> None:
    cfg = replace(tiny_config("text_only", text_kind="hf", arch=arch).text, freeze_layers=1)
    encoder = HFEncoder(cfg, vocab_size=VOCAB_SIZE, pad_id=PAD_ID)
    model = encoder.model
    layers = model.transformer.layer if arch == "distilbert" else model.encoder.layer
    assert {p.requires_grad for p in model.embeddings.parameters()} == {False}
    assert {p.requires_grad for p in layers[0].parameters()} == {False}
    assert {p.requires_grad for p in layers[1].parameters()} == {True}
    frozen = sum(p.numel() for m in (model.embeddings, layers[0]) for p in m.parameters())
    trainable, total = count_parameters(encoder)
    assert total - trainable == frozen
    unfrozen = HFEncoder(replace(cfg, freeze_layers=0), vocab_size=VOCAB_SIZE, pad_id=PAD_ID)
    assert count_parameters(unfrozen)[0] == count_parameters(unfrozen)[1] == total
    with pytest.raises(ConfigError, match="freeze_layers: 3 exceeds the encoder's 2 layers"):
        HFEncoder(replace(cfg, freeze_layers=3), vocab_size=VOCAB_SIZE, pad_id=PAD_ID)
    # Frozen parts run without dropout in training mode; the layer that learns keeps it.
    encoder.train()
    assert not model.embeddings.training
    assert not layers[0].training
    assert layers[1].training
    assert encoder.training
    assert not any(m.training for m in layers[0].modules())


def test_fully_frozen_hf_encoder_gives_the_same_features_in_training_mode() -> None:
    cfg = replace(tiny_config("text_only", text_kind="hf", dropout=0.0).text, freeze_layers=2)
    cfg.hf_config.update(dropout=0.5, attention_dropout=0.5)  # DistilBERT's own dropouts, made obvious
    encoder = HFEncoder(cfg, vocab_size=VOCAB_SIZE, pad_id=PAD_ID)
    ids = torch.randint(2, VOCAB_SIZE, (2, 9))
    mask = torch.ones_like(ids)
    encoder.eval()
    reference = encoder(ids, mask).pooled
    encoder.train()
    torch.testing.assert_close(encoder(ids, mask).pooled, reference, atol=0, rtol=0)
    unfrozen = HFEncoder(replace(cfg, freeze_layers=1), vocab_size=VOCAB_SIZE, pad_id=PAD_ID)
    unfrozen.load_state_dict(encoder.state_dict())
    unfrozen.train()
    assert not torch.allclose(unfrozen(ids, mask).pooled, reference)  # layer 2 still drops out


# --------------------------------------------------------------------------- registry and configs

CONFIG_FILES = sorted((REPO / "configs").glob("*.yaml"))


def uses_hub_vision(path: Path) -> bool:
    """Configs of hub vision or dual encoders: built from tiny stand-ins of their family in
    tests/test_encoders.py (test_recipe_configs_build_with_tiny_stand_ins)."""
    model = load_config(path).model
    return model.image.kind in ("hf", "clip") or model.text.kind == "clip"


def offline(cfg: ModelConfig) -> ModelConfig:
    """The same model without pretrained weights; a Hugging Face encoder shrunk to 2 tiny layers."""
    text = replace(cfg.text, pretrained=False, hf_config=dict(TINY_HF["distilbert"]) if cfg.text.kind == "hf" else {})
    image = replace(cfg.image, pretrained=False, weights_path=None)
    return replace(cfg, text=text, image=image)


def test_every_model_config_is_present() -> None:
    names = {path.stem for path in CONFIG_FILES}
    expected = {
        "bilstm_text",
        "distilbert_text",
        "resnet18_image",
        "cnn_image",
        "early_fusion",
        "late_fusion",
        "attention_fusion",
        "gmu",
    }
    assert expected <= names
    assert {f"synth_{n}" for n in ("bilstm_text", "cnn_image", *FUSIONS)} <= names
    assert tuple(MODELS) == MODEL_NAMES


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if not uses_hub_vision(p)], ids=lambda p: p.name)
def test_registry_builds_every_config(path: Path) -> None:
    cfg = load_config(path).model
    torch.manual_seed(0)
    model = build_model(offline(cfg), num_labels=23, vocab_size=VOCAB_SIZE, pad_id=PAD_ID)
    assert type(model) is MODELS[cfg.name]
    assert (model.text_encoder is not None) == cfg.uses_text
    assert (model.image_encoder is not None) == cfg.uses_image
    logits = eval_logits(model, make_batch([5, 3], image_size=64))
    assert logits.shape == (2, NUM_GENRES)
    assert torch.isfinite(logits).all()
    if path.stem.startswith("synth_") and path.stem != "synth_data":
        assert count_parameters(model)[1] < 1_000_000  # CPU-sized


def test_registry_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.name=early_fuson"])
    assert "model.name" in str(info.value)
    assert all(n in str(info.value) for n in MODEL_NAMES)
    cfg = tiny_config("gmu")
    cfg.name = "transformer_fusion"  # mutated after validation: the registry checks again
    with pytest.raises(ConfigError) as info:
        build_model(cfg, num_labels=23, vocab_size=VOCAB_SIZE, pad_id=PAD_ID)
    assert "transformer_fusion" in str(info.value)
    assert all(n in str(info.value) for n in MODEL_NAMES)
    with pytest.raises(ConfigError, match="model.text.kind: unknown 'lstm'; expected one of bilstm, hf"):
        load_config(None, ["model.text.kind=lstm"])
    with pytest.raises(ConfigError, match="model.image.kind: unknown 'vit'"):
        load_config(None, ["model.image.kind=vit"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.fusion.hidden=30", "model.fusion.heads=4"], "model.fusion.heads: 4 does not divide"),
        (["model.name=text_only", "model.text.kind=none"], "model.text.kind: text_only needs a text encoder"),
        (["model.name=gmu", "model.image.kind=none"], "model.image.kind: gmu needs an image encoder"),
        (["model.modality_dropout=1.5"], "model.modality_dropout: expected a probability"),
        (["model.image.kind=cnn", "model.image.pretrained=true"], "the cnn kind is trained from scratch"),
        (["model.image.cnn_channels=[8, 8]"], "model.image.cnn_channels: expected 4"),
        (["model.text.kind=hf", "model.text.hf_config={dim: 8}"], "model.text.hf_config"),
        (["model.text.hidden=0"], "model.text.hidden: expected a positive number"),
    ],
)
def test_invalid_model_configs_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bilstm_needs_the_vocabulary() -> None:
    with pytest.raises(ConfigError, match="bilstm needs the vocabulary"):
        build_model(tiny_config("text_only"), num_labels=23)


def test_model_config_round_trips_through_yaml(tmp_path) -> None:
    from mmimdb_dist.schema import save_config

    cfg = load_config(REPO / "configs" / "synth_attention_fusion.yaml")
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg


def test_importing_the_config_and_models_package_does_not_import_torch() -> None:
    code = "import sys, mmimdb_dist.schema, mmimdb_dist.models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
