"""The base of every text and image encoder: a module that says how wide its features are.

A fusion head sizes its layers from `out_dim`, and `cache-features` records it in a features
set; one base class lets both rely on it (and lets a type checker see it) without knowing
which of the encoders (BiLSTM, Hugging Face, CLIP-family tower, CNN, ResNet, cached reader)
it was given.
"""

from __future__ import annotations

from torch import nn


class FeatureEncoder(nn.Module):
    """A text or image encoder: its forward returns `TextFeatures` or `ImageFeatures` of width `out_dim`."""

    out_dim: int
