"""Word vocabulary of the BiLSTM: special ids, train-only building, encoding, JSON round trip."""

from __future__ import annotations

import json
import pickle

import pytest

from mmimdb_dist.data.text import TokenEncoder
from mmimdb_dist.data.vocab import PAD_TOKEN, UNK_TOKEN, Vocabulary, tokenize
from mmimdb_dist.errors import DataError

TRAIN = [
    "A cop hunts a killer in the city.",
    "The killer hunts a cop; the city burns!",
    "Two friends fall in love in Paris.",
    "<pad> and <unk> appear in this plot as text.",
]
DEV = ["An alien lands in Paris and meets a cop."]


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("The KILLER's car, 1984: don't stop!") == ["the", "killer's", "car", "1984", "don't", "stop"]
    assert tokenize("<pad> <unk>") == ["pad", "unk"]


def test_pad_and_unk_are_distinct_and_never_a_word() -> None:
    vocab = Vocabulary.build(TRAIN, min_freq=1)
    assert vocab.pad_id == 0
    assert vocab.unk_id == 1
    assert vocab.itos[:2] == [PAD_TOKEN, UNK_TOKEN]
    # "<pad>" written in a plot is the word "pad": it gets its own id, not the padding id.
    ids = vocab.encode("<pad> <unk>", max_length=10)
    assert ids == [vocab.stoi["pad"], vocab.stoi["unk"]]
    assert all(i > vocab.unk_id for i in ids)
    every_id = {i for text in TRAIN for i in vocab.encode(text, 100)}
    assert vocab.pad_id not in every_id
    assert vocab.unk_id not in every_id
    assert PAD_TOKEN not in vocab
    assert UNK_TOKEN not in vocab
    with pytest.raises(ValueError, match="must not be the PAD/UNK tokens"):
        Vocabulary(["cop", PAD_TOKEN])


def test_built_from_train_only_unseen_words_are_unknown() -> None:
    vocab = Vocabulary.build(TRAIN, min_freq=1)
    ids = vocab.encode(DEV[0], max_length=100)
    words = tokenize(DEV[0])
    assert len(ids) == len(words) == 9
    for word, token_id in zip(words, ids, strict=True):
        expected_known = any(word in tokenize(text) for text in TRAIN)
        assert (token_id != vocab.unk_id) == expected_known, word
    assert ids[words.index("alien")] == vocab.unk_id
    assert ids[words.index("paris")] == vocab.stoi["paris"]


def test_min_freq_max_size_and_frequency_order() -> None:
    vocab = Vocabulary.build(TRAIN, min_freq=2)
    # Seen at least twice: a x3, in x4, cop x2, hunts x2, killer x2, the x3, city x2.
    assert vocab.itos[2:] == ["in", "a", "the", "city", "cop", "hunts", "killer"]
    small = Vocabulary.build(TRAIN, min_freq=2, max_size=3)
    assert small.itos[2:] == ["in", "a", "the"]
    assert len(small) == 5
    assert small.encode("the cop", 10) == [small.stoi["the"], small.unk_id]


def test_encode_truncates_and_implements_the_loader_protocol() -> None:
    vocab = Vocabulary.build(TRAIN, min_freq=1)
    assert isinstance(vocab, TokenEncoder)
    assert len(vocab.encode(TRAIN[1], max_length=3)) == 3
    assert vocab.encode(TRAIN[1], max_length=3) == vocab.encode(TRAIN[1], max_length=100)[:3]
    assert vocab.encode("", max_length=5) == []
    clone = pickle.loads(pickle.dumps(vocab))  # travels to loader worker processes
    assert clone.encode(DEV[0], 50) == vocab.encode(DEV[0], 50)


def test_save_load_round_trip(tmp_path) -> None:
    vocab = Vocabulary.build(TRAIN, min_freq=1)
    path = tmp_path / "run" / "vocab.json"
    vocab.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["vocab.json"]  # no temp file left
    loaded = Vocabulary.load(path)
    assert loaded.itos == vocab.itos
    for text in TRAIN + DEV:
        assert loaded.encode(text, 64) == vocab.encode(text, 64)
    vocab.save(path)
    first = path.read_bytes()
    Vocabulary.load(path).save(path)
    assert path.read_bytes() == first


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"words": ["a"]}), "key 'format'"),
        (json.dumps({"format": "mmimdb-dist-vocabulary", "words": "abc"}), "key 'words'"),
        (json.dumps({"format": "mmimdb-dist-vocabulary", "words": ["a", "a"]}), "key 'words'"),
    ],
)
def test_load_rejects_bad_files_naming_file_and_key(tmp_path, content: str, expected: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected) as info:
        Vocabulary.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        Vocabulary.load(tmp_path / "nope.json")


def test_real_plots_vocabulary_covers_held_out_text() -> None:
    """On real plots, a train-only vocabulary knows most held-out words and none it never saw."""
    from real_plots import load_real_plots_split

    split = load_real_plots_split()
    vocab = Vocabulary.build(split.train_texts, min_freq=2)
    train_words = {w for text in split.train_texts for w in tokenize(text)}
    test_words = [w for text in split.test_texts for w in tokenize(text)]
    assert 5_000 < len(vocab) < len(train_words) + 2
    assert not {w for w in test_words if w not in train_words} & set(vocab.stoi)
    known = sum(w in vocab for w in test_words) / len(test_words)
    assert 0.85 < known < 1.0
