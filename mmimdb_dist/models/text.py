"""Text encoders: plot token ids -> per-token features and one pooled vector.

Both encoders return `TextFeatures`: the token sequence (for cross-attention), its mask and a
pooled vector (for the other fusions). Padding never changes the features of real tokens: the
BiLSTM packs sequences to their true lengths and the transformer masks padded keys, so
appending padding to a batch leaves every model's output unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import ConfigError
from ..hub import load_pretrained, load_pretrained_model
from ..schema import TextEncoderConfig
from .encoder import FeatureEncoder


class TextFeatures(NamedTuple):
    tokens: torch.Tensor  # B x L x D
    mask: torch.Tensor  # B x L, bool, True for real tokens
    pooled: torch.Tensor  # B x D


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens; an all-padding row gives zeros rather than NaN."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class AdditiveAttentionPool(nn.Module):
    """Bahdanau-style attention pooling: score_i = v . tanh(W h_i), softmax over real tokens."""

    def __init__(self, dim: int, attention_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(self.proj(tokens))).squeeze(-1)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask  # an all-padding row pools to zeros
        return torch.einsum("bl,bld->bd", weights, tokens)


def masked_max(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over real tokens per feature; an all-padding row gives zeros."""
    filled = tokens.masked_fill(~mask.unsqueeze(-1), torch.finfo(tokens.dtype).min)
    return torch.where(mask.any(1, keepdim=True), filled.max(1).values, torch.zeros_like(filled[:, 0]))


class BiLSTMEncoder(FeatureEncoder):
    """Word embeddings -> bidirectional LSTM -> pooling over the plot (max, attention or mean).

    Why the pooling and the initialisation matter: genre evidence in a plot is a few words
    among a hundred. A mean (and attention pooling, which starts as a mean) divides a cue
    word's contribution by the plot length, and torch's default N(0, 1) embedding rows are
    ~100x larger than an Adam step, so the words barely move in a short budget: such a model
    predicts the genre priors for many epochs. Max pooling passes a cue word's features at
    full strength whatever the length, and small initial embeddings (`embed_init_std`) let
    the words learn from the first steps.
    """

    def __init__(self, cfg: TextEncoderConfig, vocab_size: int, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=pad_id)
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, cfg.embed_init_std)
            self.embedding.weight[pad_id].zero_()
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.pooling = cfg.lstm_pooling
        if self.pooling == "attention":
            self.pool = AdditiveAttentionPool(2 * cfg.hidden, cfg.attention_dim)
        self.out_dim = 2 * cfg.hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        mask = attention_mask.bool()
        length = input_ids.shape[1]
        # An empty plot still gets one (padding) step so packing never sees a zero length.
        lengths = mask.sum(1).clamp(min=1).cpu()
        embedded = self.dropout(self.embedding(input_ids))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        tokens, _ = pad_packed_sequence(output, batch_first=True, total_length=length)
        tokens = self.dropout(tokens)
        if self.pooling == "max":
            pooled = masked_max(tokens, mask)
        elif self.pooling == "attention":
            pooled = self.pool(tokens, mask)
        else:
            pooled = masked_mean(tokens, mask)
        return TextFeatures(tokens, mask, pooled)


def _transformer_layers(model: Any, num_layers: int) -> nn.ModuleList:
    """The stack of transformer blocks, found by shape so any encoder architecture works."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ConfigError(
        f"model.text.freeze_layers: cannot find the {num_layers} transformer layers of {type(model).__name__}"
    )


class HFEncoder(FeatureEncoder):
    """Any Hugging Face encoder (DistilBERT, BERT, MiniLM, ...) with CLS or masked-mean pooling."""

    model: Any  # a transformers model: its config and outputs are typed by its class at run time

    def __init__(self, cfg: TextEncoderConfig, vocab_size: int | None = None, pad_id: int | None = None) -> None:
        super().__init__()
        self.model = load_hf_model(cfg, vocab_size, pad_id)
        self.pooling = cfg.pooling
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_dim = int(self.model.config.hidden_size)
        # A plain list, not submodules: the parts already belong to `self.model`.
        self.frozen: list[nn.Module] = freeze_hf_layers(self.model, cfg.freeze_layers) if cfg.freeze_layers else []

    def train(self, mode: bool = True) -> HFEncoder:
        """Frozen layers stay in eval mode: dropout in a part that does not learn only adds
        noise to the features the trainable layers see, and makes them differ from the same
        encoder's cached features (`mmimdb-dist cache-features`), which are computed without it."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        mask = attention_mask.bool()
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        tokens = self.dropout(tokens)
        pooled = tokens[:, 0] if self.pooling == "cls" else masked_mean(tokens, mask)
        return TextFeatures(tokens, mask, pooled)


def load_hf_model(cfg: TextEncoderConfig, vocab_size: int | None, pad_id: int | None) -> Any:
    """Pretrained weights by hub name or local folder, or a random model from an architecture.

    A random model takes its architecture from `hf_config` (with `model_type`, nothing is read)
    or from the config file of `name`; the tokenizer's vocabulary size and pad id win over both.
    """
    from transformers import AutoConfig, AutoModel

    if cfg.pretrained:
        try:
            model = load_pretrained_model("model.text.name", cfg.name)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"model.text.name: cannot load pretrained encoder {cfg.name!r}: expected "
                f"a local model folder or a reachable hub name ({exc})"
            ) from exc
        embedded = model.get_input_embeddings().num_embeddings
        if vocab_size is not None and vocab_size > embedded:
            raise ConfigError(
                f"model.text.name: the tokenizer has {vocab_size} ids but {cfg.name!r} embeds "
                f"only {embedded}; use the tokenizer that comes with the encoder"
            )
        return _without_pooler(model)
    overrides = dict(cfg.hf_config)
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    if pad_id is not None:
        overrides["pad_token_id"] = pad_id
    try:
        if "model_type" in overrides:
            config = AutoConfig.for_model(**overrides)
        else:
            config = load_pretrained(
                "model.text.name", cfg.name, lambda source, **kw: AutoConfig.from_pretrained(source, **kw, **overrides)
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"model.text.hf_config: cannot build a {cfg.name!r} architecture from {cfg.hf_config} ({exc})"
        ) from exc
    return _without_pooler(AutoModel.from_config(config))


def _without_pooler(model: Any) -> Any:
    """Drop BERT's [CLS] pooler: its output is never used, and parameters that get no gradient
    break distributed data parallel."""
    if isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = None
    return model


def freeze_hf_layers(model: Any, num_frozen: int) -> list[nn.Module]:
    """Freeze the embeddings and the first `num_frozen` transformer layers; returns them."""
    total = int(model.config.num_hidden_layers)
    if num_frozen > total:
        raise ConfigError(f"model.text.freeze_layers: {num_frozen} exceeds the encoder's {total} layers")
    frozen = [model.get_input_embeddings()]
    embeddings = getattr(model, "embeddings", None)
    if isinstance(embeddings, nn.Module):  # position and type embeddings, LayerNorm
        frozen.append(embeddings)
    frozen.extend(_transformer_layers(model, total)[:num_frozen])
    for module in frozen:
        module.requires_grad_(False)
    return frozen
