"""Genre classifiers on top of a text encoder, a vision encoder, or both.

All models share `MultimodalClassifier.encode`, which runs the encoders and deals with
missing modalities in one place: a sample whose plot or poster is absent (`text_present` /
`image_present` false, or the batch key missing altogether) gets a learned "missing"
embedding instead, and at train time `modality_dropout` hides one modality of a sample on
purpose (never both) so the model learns to cope. The fusions differ only in their head.

Every trainable parameter takes part in every training step (the missing embeddings with a
zero gradient when nothing is missing), so the models run under distributed data parallel
without `find_unused_parameters`. A batch without `input_ids` or `pixel_values` at all is
meant for inference: the skipped encoder then gets no gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..schema import ModelConfig
from .encoder import FeatureEncoder
from .text import TextFeatures, masked_mean
from .vision import ImageFeatures

Batch = dict[str, Any]


class ClassifierHead(nn.Module):
    """A linear classifier plus a one-hidden-layer MLP beside it: logits = W x + MLP(x).

    The linear path is what makes the head learn quickly: a plain two-layer MLP starts with
    small outputs, sends weak gradients back to the encoders, and can lose its ReLU units to
    one large early step, so a from-scratch model sat at the genre priors for epochs. The
    MLP adds the interactions between features (between modalities, for the fusions).
    `output_bias` holds one bias per label (set to the train log-odds by the trainer).
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float, out_dim: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim, bias=False)
        )
        self.output_bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.dropout(features)
        return self.linear(features) + self.mlp(features) + self.output_bias


def mlp_head(in_dim: int, hidden: int, dropout: float, out_dim: int) -> ClassifierHead:
    return ClassifierHead(in_dim, hidden, dropout, out_dim)


def _batch_size(batch: Batch) -> tuple[int, torch.device]:
    for key in ("input_ids", "pixel_values", "text_features", "image_features", "labels"):
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            return value.shape[0], value.device
    raise ValueError("batch has none of input_ids, pixel_values, labels: cannot tell its size")


def _presence(batch: Batch, flag: str, data_key: str, size: int, device: torch.device) -> torch.Tensor:
    if data_key not in batch:
        return torch.zeros(size, dtype=torch.bool, device=device)
    present = batch.get(flag)
    if present is None:
        return torch.ones(size, dtype=torch.bool, device=device)
    return present.to(device=device, dtype=torch.bool)


class MultimodalClassifier(nn.Module):
    """Encoders plus missing-modality handling; subclasses implement `head`."""

    # Whether a training step can leave a trainable parameter without a gradient, which makes
    # DDP search the graph for them after every backward (`train.find_unused_parameters: null`
    # reads this). None of the built-in models can (tests/test_models.py and test_encoders.py
    # check every family); a subclass that routes batches through optional parts says True.
    leaves_parameters_unused = False
    text_encoder: FeatureEncoder | None
    image_encoder: FeatureEncoder | None
    text_dim: int
    image_dim: int
    num_labels: int

    def __init__(
        self,
        cfg: ModelConfig,
        text_encoder: FeatureEncoder | None,
        image_encoder: FeatureEncoder | None,
        num_labels: int,
    ) -> None:
        super().__init__()
        # The output width: one logit per label of the data's label set (the shard manifest's).
        self.num_labels = num_labels
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.modality_dropout = cfg.modality_dropout
        self.text_dim = text_encoder.out_dim if text_encoder is not None else 0
        # The batch key each encoder reads: raw inputs, or cached encoder outputs
        # (`models.cached`, for runs on `mmimdb-dist cache-features` output).
        self.text_key = getattr(text_encoder, "batch_key", "input_ids")
        self.image_key = getattr(image_encoder, "batch_key", "pixel_values")
        self.image_dim = image_encoder.out_dim if image_encoder is not None else 0
        if text_encoder is not None:
            self.missing_text = nn.Parameter(torch.randn(self.text_dim) * 0.02)
        if image_encoder is not None:
            self.missing_image = nn.Parameter(torch.randn(self.image_dim) * 0.02)

    def forward(self, batch: Batch) -> dict[str, Any]:
        text, image = self.encode(batch)
        return self.head(text, image)

    @torch.no_grad()
    def init_output_bias(self, positive_rate: torch.Tensor, multiclass: bool = False) -> None:
        """Start every classifier at the train label frequencies: bias = log-odds of the rate
        (sigmoid outputs), or the log of the class prior (softmax outputs, `multiclass`).

        With many imbalanced labels a zero bias predicts p = 0.5 for all of them; the first
        epoch is then spent learning the priors instead of reading plots and posters.
        """
        rate = positive_rate.float().clamp(1e-4, 1 - 1e-4)
        log_odds = torch.log(rate) if multiclass else torch.logit(rate)
        for module in self.modules():
            if isinstance(module, ClassifierHead):
                module.output_bias.copy_(log_odds.to(module.output_bias))

    def head(self, text: TextFeatures | None, image: ImageFeatures | None) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self, batch: Batch) -> tuple[TextFeatures | None, ImageFeatures | None]:
        cached = self.text_key != "input_ids" or self.image_key != "pixel_values"
        if (
            cached
            and self.text_key not in batch
            and self.image_key not in batch
            and ("input_ids" in batch or "pixel_values" in batch)
        ):
            # Raw plots and posters given to a head trained on cached features would otherwise
            # be read as two missing modalities, and predict the same genres for every movie.
            raise ValueError(
                "this model was trained on cached encoder features (loader.features_dir) "
                "and reads text_features / image_features batches, not plots and posters"
            )
        size, device = _batch_size(batch)
        text_present = _presence(batch, "text_present", self.text_key, size, device)
        image_present = _presence(batch, "image_present", self.image_key, size, device)
        both_encoders = self.text_encoder is not None and self.image_encoder is not None
        if self.training and self.modality_dropout > 0 and both_encoders:
            text_present, image_present = self._drop_modality(text_present, image_present)
        text = image = None
        if self.text_encoder is not None:
            text = self._encode_text(batch, text_present, size)
        if self.image_encoder is not None:
            image = self._encode_image(batch, image_present, size)
        return text, image

    def _drop_modality(
        self, text_present: torch.Tensor, image_present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hide one modality of each selected sample; a sample already missing one keeps the other."""
        drop = torch.rand(text_present.shape, device=text_present.device) < self.modality_dropout
        drop_text = torch.rand(text_present.shape, device=text_present.device) < 0.5
        both = text_present & image_present
        return (text_present & ~(drop & drop_text & both), image_present & ~(drop & ~drop_text & both))

    def _encode_text(self, batch: Batch, present: torch.Tensor, size: int) -> TextFeatures:
        missing = self.missing_text.view(1, 1, -1)
        if self.text_key not in batch:
            tokens = missing.expand(size, 1, -1)
            mask = torch.ones(size, 1, dtype=torch.bool, device=present.device)
            return TextFeatures(tokens, mask, tokens[:, 0])
        # A row without any real token (an absent plot sent as all padding) gets its first
        # position unmasked, so no attention softmax runs over nothing and turns into NaN.
        attention_mask = batch["attention_mask"].clone()
        attention_mask[:, 0] = torch.maximum(attention_mask[:, 0], (attention_mask.sum(1) == 0).long())
        assert self.text_encoder is not None  # encode() reads a modality only when its encoder exists
        features = self.text_encoder(batch[self.text_key], attention_mask)
        # Applied even when every plot is present: the missing embedding then gets a zero
        # gradient rather than none, which distributed data parallel requires of every parameter.
        # A missing plot becomes a one-token sequence holding the missing embedding.
        only_first = torch.zeros_like(features.mask)
        only_first[:, 0] = True
        keep = present.view(-1, 1)
        tokens = torch.where(keep.unsqueeze(-1), features.tokens, missing.to(features.tokens.dtype))
        mask = torch.where(keep, features.mask, only_first)
        pooled = torch.where(keep, features.pooled, self.missing_text.to(features.pooled.dtype))
        return TextFeatures(tokens, mask, pooled)

    def _encode_image(self, batch: Batch, present: torch.Tensor, size: int) -> ImageFeatures:
        missing = self.missing_image.view(1, 1, -1)
        if self.image_key not in batch:
            patches = missing.expand(size, 1, -1)
            return ImageFeatures(patches, patches[:, 0])
        assert self.image_encoder is not None  # as for the text encoder
        features = self.image_encoder(batch[self.image_key])
        keep = present.view(-1, 1)
        patches = torch.where(keep.unsqueeze(-1), features.patches, missing.to(features.patches.dtype))
        pooled = torch.where(keep, features.pooled, self.missing_image.to(features.pooled.dtype))
        return ImageFeatures(patches, pooled)


class UnimodalClassifier(MultimodalClassifier):
    """Text-only or image-only: the pooled vector of the one encoder into an MLP head."""

    def __init__(
        self,
        cfg: ModelConfig,
        text_encoder: FeatureEncoder | None,
        image_encoder: FeatureEncoder | None,
        num_labels: int,
    ) -> None:
        super().__init__(cfg, text_encoder, image_encoder, num_labels)
        self.classifier = mlp_head(
            self.text_dim or self.image_dim, cfg.fusion.hidden, cfg.fusion.dropout, self.num_labels
        )

    def head(self, text: TextFeatures | None, image: ImageFeatures | None) -> dict[str, Any]:
        features = text if text is not None else image
        assert features is not None  # a unimodal model has exactly one encoder
        pooled = features.pooled
        return {"logits": self.classifier(pooled)}


class EarlyFusion(MultimodalClassifier):
    """Project both pooled vectors to the same width, concatenate, classify with an MLP."""

    def __init__(
        self, cfg: ModelConfig, text_encoder: FeatureEncoder, image_encoder: FeatureEncoder, num_labels: int
    ) -> None:
        super().__init__(cfg, text_encoder, image_encoder, num_labels)
        hidden = cfg.fusion.hidden
        self.text_proj = nn.Sequential(nn.Linear(self.text_dim, hidden), nn.LayerNorm(hidden))
        self.image_proj = nn.Sequential(nn.Linear(self.image_dim, hidden), nn.LayerNorm(hidden))
        self.classifier = mlp_head(2 * hidden, hidden, cfg.fusion.dropout, self.num_labels)

    def head(self, text: TextFeatures, image: ImageFeatures) -> dict[str, Any]:  # type: ignore[override]  # a fusion model is built with both encoders, so encode() gives it both
        fused = torch.cat([self.text_proj(text.pooled), self.image_proj(image.pooled)], dim=-1)
        return {"logits": self.classifier(fused)}


class LateFusion(MultimodalClassifier):
    """One classifier per modality; their logits are mixed with learned softmax weights.

    The branch logits are returned so the trainer can add a loss term per branch
    (`branch_loss_weight`), which keeps each branch a classifier in its own right.
    """

    def __init__(
        self, cfg: ModelConfig, text_encoder: FeatureEncoder, image_encoder: FeatureEncoder, num_labels: int
    ) -> None:
        super().__init__(cfg, text_encoder, image_encoder, num_labels)
        self.text_classifier = mlp_head(self.text_dim, cfg.fusion.hidden, cfg.fusion.dropout, self.num_labels)
        self.image_classifier = mlp_head(self.image_dim, cfg.fusion.hidden, cfg.fusion.dropout, self.num_labels)
        self.branch_weight_logits = nn.Parameter(torch.zeros(2))
        self.branch_loss_weight = cfg.fusion.branch_loss_weight

    def head(self, text: TextFeatures, image: ImageFeatures) -> dict[str, Any]:  # type: ignore[override]  # a fusion model is built with both encoders, so encode() gives it both
        text_logits = self.text_classifier(text.pooled)
        image_logits = self.image_classifier(image.pooled)
        weights = torch.softmax(self.branch_weight_logits, dim=0)
        return {
            "logits": weights[0] * text_logits + weights[1] * image_logits,
            "branch_logits": {"text": text_logits, "image": image_logits},
            "branch_weights": weights,
        }


class AttentionFusion(MultimodalClassifier):
    """Cross-attention both ways between plot tokens and poster patches, then pool and classify.

    Text tokens attend over the patch grid (which part of the poster matters for this word) and
    patches attend over the real text tokens (padding masked). `attention` holds the
    text-to-image weights, B x heads x L x P, for visualising where the plot looks on the poster.
    The encoders' own pooled summaries (the BiLSTM's attention pooling, say) join the attended
    features in the classifier input, so that no encoder part sits idle.
    """

    def __init__(
        self, cfg: ModelConfig, text_encoder: FeatureEncoder, image_encoder: FeatureEncoder, num_labels: int
    ) -> None:
        super().__init__(cfg, text_encoder, image_encoder, num_labels)
        hidden, heads, dropout = cfg.fusion.hidden, cfg.fusion.heads, cfg.fusion.dropout
        self.text_proj = nn.Linear(self.text_dim, hidden)
        self.image_proj = nn.Linear(self.image_dim, hidden)
        self.text_to_image = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.image_to_text = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.text_norm = nn.LayerNorm(hidden)
        self.image_norm = nn.LayerNorm(hidden)
        self.summary_proj = nn.Sequential(nn.Linear(self.text_dim + self.image_dim, hidden), nn.LayerNorm(hidden))
        self.classifier = mlp_head(3 * hidden, hidden, dropout, self.num_labels)

    def head(self, text: TextFeatures, image: ImageFeatures) -> dict[str, Any]:  # type: ignore[override]  # a fusion model is built with both encoders, so encode() gives it both
        words = self.text_proj(text.tokens)
        patches = self.image_proj(image.patches)
        words_seen, text_to_image = self.text_to_image(
            words, patches, patches, need_weights=True, average_attn_weights=False
        )
        patches_seen, image_to_text = self.image_to_text(
            patches, words, words, key_padding_mask=~text.mask, need_weights=True, average_attn_weights=False
        )
        words = self.text_norm(words + words_seen)
        patches = self.image_norm(patches + patches_seen)
        summary = self.summary_proj(torch.cat([text.pooled, image.pooled], dim=-1))
        pooled = torch.cat([masked_mean(words, text.mask), patches.mean(1), summary], dim=-1)
        return {"logits": self.classifier(pooled), "attention": text_to_image, "image_to_text_attention": image_to_text}


class GatedMultimodalUnit(MultimodalClassifier):
    """GMU of Arevalo et al. (2017): a learned per-unit gate between the two modalities.

    h_t = tanh(W_t x_t), h_v = tanh(W_v x_v), z = sigmoid(W_z [x_t; x_v]), h = z*h_t + (1-z)*h_v.
    The gate `z` is returned: its mean says how much the model leans on the plot.
    """

    def __init__(
        self, cfg: ModelConfig, text_encoder: FeatureEncoder, image_encoder: FeatureEncoder, num_labels: int
    ) -> None:
        super().__init__(cfg, text_encoder, image_encoder, num_labels)
        hidden = cfg.fusion.hidden
        self.text_hidden = nn.Linear(self.text_dim, hidden, bias=False)
        self.image_hidden = nn.Linear(self.image_dim, hidden, bias=False)
        self.gate = nn.Linear(self.text_dim + self.image_dim, hidden, bias=False)
        self.classifier = mlp_head(hidden, hidden, cfg.fusion.dropout, self.num_labels)

    def head(self, text: TextFeatures, image: ImageFeatures) -> dict[str, Any]:  # type: ignore[override]  # a fusion model is built with both encoders, so encode() gives it both
        h_text = torch.tanh(self.text_hidden(text.pooled))
        h_image = torch.tanh(self.image_hidden(image.pooled))
        z = torch.sigmoid(self.gate(torch.cat([text.pooled, image.pooled], dim=-1)))
        fused = z * h_text + (1 - z) * h_image
        return {"logits": self.classifier(fused), "gate": z}
