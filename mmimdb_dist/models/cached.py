"""Stand-ins for the text and image encoders when a run trains on cached features.

They hold no weights: the features were computed once by the real (frozen) encoders with
`mmimdb-dist cache-features`, and these only unpack the cached rows into the `TextFeatures`
/ `ImageFeatures` the fusion heads take, so every head (early, late, attention, GMU),
modality dropout and the missing-modality embeddings work unchanged. Each declares the
batch key it reads (`batch_key`), which is how the classifier finds its input.
"""

from __future__ import annotations

import torch

from ..data.codecs import IMAGE_FEATURES, TEXT_FEATURES
from ..data.features import FeatureSpec
from .encoder import FeatureEncoder
from .text import TextFeatures
from .vision import ImageFeatures


class CachedTextEncoder(FeatureEncoder):
    """B x (1 + L) x D cached rows -> pooled (row 0) and the L token vectors."""

    batch_key = TEXT_FEATURES

    def __init__(self, dim: int, sequences: bool) -> None:
        super().__init__()
        self.out_dim = dim
        self.sequences = sequences

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        pooled = features[:, 0]
        # Without sequences the pooled vector stands in as a one-token sequence.
        tokens = features[:, 1:] if self.sequences else features[:, :1]
        return TextFeatures(tokens, attention_mask.bool(), pooled)


class CachedImageEncoder(FeatureEncoder):
    """B x (1 + P) x D cached rows -> pooled (row 0) and the P patch vectors."""

    batch_key = IMAGE_FEATURES

    def __init__(self, dim: int, sequences: bool) -> None:
        super().__init__()
        self.out_dim = dim
        self.sequences = sequences

    def forward(self, features: torch.Tensor) -> ImageFeatures:
        patches = features[:, 1:] if self.sequences else features[:, :1]
        return ImageFeatures(patches, features[:, 0])


def cached_encoders(spec: FeatureSpec) -> tuple[CachedTextEncoder | None, CachedImageEncoder | None]:
    """The stand-ins of the modalities the features set holds (None for one it lacks)."""
    return (
        CachedTextEncoder(spec.text_dim, spec.sequences) if spec.text_dim else None,
        CachedImageEncoder(spec.image_dim, spec.sequences) if spec.image_dim else None,
    )
