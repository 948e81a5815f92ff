"""The BiLSTM text model learns real genres from real MM-IMDb plots.

1,608 real dev movies; a fixed fifth is held out (the same one as the TF-IDF baseline's test).
The model is built by the registry from a model config, with its vocabulary from the training
part only, trained for a few epochs on CPU, and must beat predicting the k most frequent
training genres for every movie (best of k = 1, 2, 3; micro and macro F1 each maximised
separately) on the held-out fifth. The decision threshold is one number tuned on a dev slice
carved from the training part (never on the held-out fifth); threshold 0.5 and per-genre
thresholds tuned on the same slice are printed too. With ~1,000 training plots a word-level
model trained from scratch is still uncertain after a few epochs, so its probabilities sit
below 0.5 and 257 dev movies are too few to tune 23 thresholds well: one shared threshold is
the robust protocol at this size.
"""

from __future__ import annotations

import numpy as np
import torch
from real_plots import load_real_plots_split, trivial_topk_baseline

from mmimdb_dist.data.vocab import Vocabulary
from mmimdb_dist.metrics import compute_metrics, tune_thresholds
from mmimdb_dist.models.registry import build_model
from mmimdb_dist.schema import FusionConfig, ModelConfig, TextEncoderConfig

MAX_LENGTH = 200
BATCH_SIZE = 32
EPOCHS = 5
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def padded_batch(vocab: Vocabulary, texts: list[str]) -> dict[str, torch.Tensor]:
    ids = [vocab.encode(text, MAX_LENGTH) or [vocab.unk_id] for text in texts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), vocab.pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(ids), width, dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention_mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@torch.no_grad()
def predict(model: torch.nn.Module, vocab: Vocabulary, texts: list[str]) -> np.ndarray:
    model.eval()
    probs = [torch.sigmoid(model(padded_batch(vocab, texts[i : i + 128]))["logits"]) for i in range(0, len(texts), 128)]
    return torch.cat(probs).numpy()


def length_sorted_batches(vocab: Vocabulary, texts: list[str], rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of plots of similar length: far less padding for the LSTM to skip."""
    lengths = np.array([len(vocab.encode(t, MAX_LENGTH)) for t in texts])
    order = np.argsort(lengths + rng.uniform(0, 8, len(texts)), kind="stable")
    batches = [order[i : i + BATCH_SIZE] for i in range(0, len(order), BATCH_SIZE)]
    rng.shuffle(batches)
    return batches


def best_shared_threshold(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(threshold, micro F1) of the one threshold for all genres that maximises micro F1."""
    scores = [compute_metrics(labels, probs, t)["f1_micro"] for t in THRESHOLD_GRID]
    best = int(np.argmax(scores))
    return float(THRESHOLD_GRID[best]), float(scores[best])


def test_bilstm_beats_top_k_genres_on_real_plots() -> None:
    # Small recurrent steps are dominated by thread hand-offs: one thread is several times faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_and_evaluate()
    finally:
        torch.set_num_threads(threads)


def train_and_evaluate() -> None:
    torch.manual_seed(0)
    data = load_real_plots_split()
    trivial = trivial_topk_baseline(data.train_labels, data.test_labels)
    n_dev = len(data.train_texts) // 5  # dev slice for threshold tuning and picking the epoch
    train_texts, dev_texts = data.train_texts[n_dev:], data.train_texts[:n_dev]
    train_labels, dev_labels = data.train_labels[n_dev:], data.train_labels[:n_dev]

    cfg = ModelConfig(
        name="text_only",
        text=TextEncoderConfig(kind="bilstm", embed_dim=64, hidden=48, attention_dim=32, dropout=0.2),
        fusion=FusionConfig(hidden=128, dropout=0.2),
    )
    vocab = Vocabulary.build(train_texts, min_freq=cfg.text.vocab_min_freq, max_size=cfg.text.vocab_max_size)
    model = build_model(cfg, num_labels=23, vocab_size=len(vocab), pad_id=vocab.pad_id)
    labels = torch.tensor(train_labels, dtype=torch.float32)
    model.init_output_bias(labels.mean(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)

    best = (-1.0, None, 0)
    for epoch in range(EPOCHS):
        model.train()
        for index in length_sorted_batches(vocab, train_texts, rng):
            logits = model(padded_batch(vocab, [train_texts[i] for i in index]))["logits"]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[index])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        _, dev_f1 = best_shared_threshold(dev_labels, predict(model, vocab, dev_texts))
        if dev_f1 > best[0]:
            best = (dev_f1, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
    model.load_state_dict(best[1])

    dev_probs = predict(model, vocab, dev_texts)
    threshold, _ = best_shared_threshold(dev_labels, dev_probs)
    test_probs = predict(model, vocab, data.test_texts)
    shared = compute_metrics(data.test_labels, test_probs, threshold)
    at_half = compute_metrics(data.test_labels, test_probs)
    per_label = compute_metrics(data.test_labels, test_probs, tune_thresholds(dev_labels, dev_probs))

    print(
        f"\nreal plots, held-out {len(data.test_texts)} movies (BiLSTM: train {len(train_texts)}, "
        f"dev {len(dev_texts)}, vocabulary {len(vocab)}, best epoch {best[2]} of {EPOCHS})"
    )
    print(f"  trivial top-k (best k)       micro-F1 {trivial['micro_f1']:.4f}  macro-F1 {trivial['macro_f1']:.4f}")
    for label, metrics in (
        (f"shared threshold {threshold:.2f} (dev)", shared),
        ("threshold 0.5", at_half),
        ("per-genre thresholds (dev)", per_label),
    ):
        print(
            f"  BiLSTM {label:<28} micro-F1 {metrics['f1_micro']:.4f}  macro-F1 {metrics['f1_macro']:.4f}"
            f"  mAP {metrics['mean_average_precision']:.4f}  ROC-AUC {metrics['roc_auc_macro']:.4f}"
        )

    assert shared["f1_micro"] > trivial["micro_f1"]
    assert shared["f1_macro"] > trivial["macro_f1"]
    # Ranking quality clearly above chance (0.5) across genres.
    assert shared["roc_auc_macro"] > 0.65
