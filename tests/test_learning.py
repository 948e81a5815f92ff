"""The recipe learns: planted genre cues are found within a short budget.

The text path used to sit at the genre priors for whole runs: attention pooling starts as a
mean that divides a cue word by the plot length, nn.Embedding's N(0, 1) rows are far larger
than an Adam step at lr 1e-3, and a plain two-layer head sends back weak gradients. The
loaders were not at fault: a minimal PyTorch loop on the trainer's very batches stalled the
same way. This test would have caught it: a BiLSTM built from the default config, trained
with the trainer's optimizer, learning rate and bias initialisation, must find cue words
hidden among filler words in about a hundred steps (the old recipe stayed at chance, ROC-AUC
0.5, for as long).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mmimdb_dist.models.registry import build_model
from mmimdb_dist.schema import FusionConfig, ModelConfig, TextEncoderConfig, TrainConfig
from mmimdb_dist.train.optim import build_optimizer

VOCAB, FILLER_FROM, GENRES_PLANTED = 400, 50, 4


def planted_cue_batch(rng: np.random.Generator, size: int) -> tuple[dict, torch.Tensor]:
    """Plots of 60-120 filler words; genre g (of 23) is on a movie 30% of the time and then,
    like the synthetic plots, one or two of its cue words (ids 2 + 2g, 3 + 2g) sit in it."""
    lengths = rng.integers(60, 121, size)
    ids = torch.zeros(size, lengths.max(), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.zeros(size, 23)
    for row, length in enumerate(lengths):
        words = rng.integers(FILLER_FROM, VOCAB, length)
        for genre in range(GENRES_PLANTED):
            if rng.random() < 0.3:
                labels[row, genre] = 1
                positions = rng.choice(length, rng.integers(1, 3), replace=False)
                words[positions] = 2 + 2 * genre + rng.integers(0, 2)
        ids[row, :length] = torch.from_numpy(words)
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}, labels


def test_default_bilstm_recipe_finds_planted_cue_words_within_120_steps() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # The defaults of every key that shapes learning; only the sizes are made small.
    cfg = ModelConfig(
        name="text_only", text=TextEncoderConfig(kind="bilstm", embed_dim=32, hidden=32), fusion=FusionConfig(hidden=32)
    )
    train_cfg = TrainConfig()
    model = build_model(cfg, num_labels=23, vocab_size=VOCAB, pad_id=0)
    model.init_output_bias(torch.full((23,), 0.05).index_fill(0, torch.arange(GENRES_PLANTED), 0.3))
    optimizer = build_optimizer(model, cfg, train_cfg)
    model.train()
    for _ in range(120):
        batch, labels = planted_cue_batch(rng, 32)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)["logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    batch, labels = planted_cue_batch(np.random.default_rng(1), 400)
    with torch.no_grad():
        probs = torch.sigmoid(model(batch)["logits"]).numpy()
    aucs = [roc_auc_score(labels[:, g].numpy(), probs[:, g]) for g in range(GENRES_PLANTED)]
    print(f"\nplanted-cue ROC-AUC per genre after 120 steps: {np.round(aucs, 3).tolist()}")
    # Measured: [0.99, 1.0, 1.0, 0.65] (mean 0.91); with attention pooling, N(0, 1) embeddings
    # and lr 1e-3 every genre stays at 0.46-0.51.
    assert np.mean(aucs) > 0.8
