"""Tiny random-initialised vision and dual encoders, saved as real model folders.

Each folder holds what a hub repository holds (config.json, model.safetensors, the image
processor's preprocessor_config.json and, for the dual encoders, a tokenizer), so the product
loads them by path through exactly the code that loads a hub name, with no network. The
tokenizer is a byte-level CLIP BPE over single characters, built with `from_pretrained`
semantics (a saved folder read back), so its ids are real characters, never [UNK].
"""

from __future__ import annotations

from pathlib import Path

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
IMAGE_SIZE, PATCH = 32, 8
TEXT_POSITIONS = 16  # the text tower's window: a plot of ~60 characters fills several
# Distinct statistics per family, so a test can tell whose normalisation an encoder uses.
STATS = {
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "convnext": ((0.1, 0.2, 0.3), (0.3, 0.2, 0.1)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
HF_VISION = ("vit", "dinov2", "convnext")
DUAL = ("clip", "siglip")


def char_tokenizer():
    """A CLIP tokenizer whose vocabulary is the 256 byte characters (with and without </w>)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in bytes_to_unicode().values():
            vocab.setdefault(char + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[])


def save_tiny(kind: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny `kind` model folder (see STATS for the kinds) and return it."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        ConvNextConfig,
        ConvNextModel,
        Dinov2Config,
        Dinov2Model,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    torch.manual_seed(seed)
    mean, std = STATS[kind]
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    vision = {**SMALL, "image_size": IMAGE_SIZE, "patch_size": PATCH}
    if kind == "vit":
        model, processor = ViTModel(ViTConfig(**vision)), ViTImageProcessor(size=square, image_mean=mean, image_std=std)
    elif kind == "dinov2":
        config = Dinov2Config(**{k: v for k, v in vision.items() if k != "intermediate_size"})
        model, processor = Dinov2Model(config), ViTImageProcessor(size=square, image_mean=mean, image_std=std)
    elif kind == "convnext":
        config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=IMAGE_SIZE)
        model, processor = ConvNextModel(config), ViTImageProcessor(size=square, image_mean=mean, image_std=std)
    elif kind in DUAL:
        tokenizer = char_tokenizer()
        text = {
            **SMALL,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": TEXT_POSITIONS,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        if kind == "clip":
            config = CLIPConfig(
                text_config={**text, "bos_token_id": tokenizer.bos_token_id}, vision_config=vision, projection_dim=24
            )
            model = CLIPModel(config)
            processor = CLIPImageProcessor(
                size={"shortest_edge": IMAGE_SIZE}, crop_size=square, image_mean=mean, image_std=std
            )
        else:
            model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
            processor = SiglipImageProcessor(size=square, image_mean=mean, image_std=std)
        tokenizer.save_pretrained(str(folder))
    else:
        raise ValueError(kind)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder
