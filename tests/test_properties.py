"""Property-based tests (hypothesis) of every reader of outside input: whatever the bytes, JSON
values, Unicode (lone surrogates included) or image modes, a reader gives an item or that item's
counted skip / one error line, never a traceback, and what it gives can be written as UTF-8."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmimdb_dist.data.codecs import FeatureCodec, ShardCodec
from mmimdb_dist.data.sources.mmimdb.genres import GENRES
from mmimdb_dist.data.sources.mmimdb.raw import SampleSkipped, load_poster, read_movie, without_lone_surrogates
from mmimdb_dist.errors import DataError
from mmimdb_dist.inference.inputs import _jsonl_movie

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# All of Unicode, lone surrogates (category Cs) included: JSON's \ud800 escapes produce them.
TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
# Movie records shaped like MM-IMDb's, with any values in the fields the reader uses.
GENRE_LISTS = st.lists(st.sampled_from([*list(GENRES), "Adult", "Cooking"]) | TEXT, max_size=4)
MOVIES = st.fixed_dictionaries(
    {},
    optional={
        "plot": st.lists(TEXT, max_size=3) | TEXT | JSON_VALUES,
        "genres": GENRE_LISTS | JSON_VALUES,
        "title": TEXT | JSON_VALUES,
        "year": JSON_SCALARS,
    },
)


def utf8_safe(value: object) -> None:
    """What a reader hands on can be written to a UTF-8 file (a shard, a JSONL output)."""
    json.dumps(value, ensure_ascii=False).encode("utf-8")


def _raw_folder(json_bytes: bytes) -> Path:
    from PIL import Image

    root = Path(tempfile.mkdtemp())
    dataset = root / "dataset"
    dataset.mkdir()
    (dataset / "0000001.json").write_bytes(json_bytes)
    Image.new("RGB", (8, 12), (10, 20, 30)).save(dataset / "0000001.jpeg", format="JPEG")
    return root


def _read(json_bytes: bytes) -> None:
    root = _raw_folder(json_bytes)
    try:
        movie = read_movie(root, "0000001", "train")
    except SampleSkipped as skip:
        assert skip.record.reason
        assert str(root) in str(skip.record.file)
        return
    utf8_safe([movie.plot, movie.title, movie.genres])
    assert movie.plot.strip()
    assert len(movie.labels) == len(GENRES)
    assert any(movie.labels)


@SETTINGS
@given(MOVIES)
def test_raw_reader_on_any_movie_record(record: dict) -> None:
    _read(json.dumps(record).encode("utf-8"))  # json.dumps escapes lone surrogates as \udXXX


@SETTINGS
@given(JSON_VALUES)
def test_raw_reader_on_any_json_value(value: object) -> None:
    _read(json.dumps(value).encode("utf-8"))


@SETTINGS
@given(st.binary(max_size=200))
def test_raw_reader_on_any_bytes(data: bytes) -> None:
    _read(data)


def test_raw_reader_on_very_deep_json() -> None:
    _read(b'{"plot": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")


@SETTINGS
@given(TEXT)
def test_lone_surrogates_are_replaced_and_pairs_kept(text: str) -> None:
    cleaned, changed = without_lone_surrogates({"plot": [text]})
    utf8_safe(cleaned)
    assert changed == any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# --------------------------------------------------------------------------- posters

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]  # (PNG cannot hold PA)


@st.composite
def posters(draw) -> tuple[bytes, str, bool]:
    """(file bytes, mode, whether the image has more than one grey level)."""
    from PIL import Image

    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(2, 24)), draw(st.integers(2, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    gray = rng.random((height, width))
    if draw(st.booleans()):
        gray[:] = gray[0, 0]  # a flat poster must stay flat
    if mode == "I;16":
        image = Image.fromarray((gray * 65535).astype(np.uint16))
    elif mode == "I":
        image = Image.fromarray((gray * 65535).astype(np.int32))
    elif mode == "F":
        image = Image.fromarray(gray.astype(np.float32))
    else:
        image = Image.fromarray((gray * 255).astype(np.uint8), mode="L").convert(mode)
    fmt = {
        "I;16": "PNG",
        "I": "TIFF",
        "F": "TIFF",
        "LA": "PNG",
        "P": "PNG",
        "1": "PNG",
        "RGBA": "PNG",
        "CMYK": "JPEG",
        "YCbCr": "JPEG",
    }.get(mode, "JPEG")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    varied = float(np.ptp((gray * 255).round())) >= 64 and mode != "1"
    return buffer.getvalue(), mode, varied


@SETTINGS
@given(posters())
def test_any_poster_mode_and_depth_becomes_rgb_with_its_contrast(poster: tuple[bytes, str, bool]) -> None:
    from mmimdb_dist.data.sources.mmimdb.raw import Movie

    data, mode, varied = poster
    root = _raw_folder(b"{}")
    (root / "dataset" / "0000001.jpeg").write_bytes(data)
    movie = Movie(
        id="0000001",
        split="train",
        title="",
        year=None,
        plot="x",
        genres=["Drama"],
        labels=[1] + [0] * 22,
        num_plots=1,
        poster_path=root / "dataset" / "0000001.jpeg",
    )
    image = load_poster(movie)
    assert image.mode == "RGB"
    pixels = np.asarray(image, dtype=np.float64)
    if varied:  # a 16-bit, float or 8-bit poster with real contrast is not flattened
        assert np.ptp(pixels) >= 32, (mode, np.ptp(pixels))


# --------------------------------------------------------------------------- shard samples


class CharEncoder:
    pad_id = 0

    def encode(self, text: str, max_length: int) -> list[int]:
        return [1 + ord(c) % 200 for c in text[:max_length]]


@SETTINGS
@given(st.dictionaries(st.sampled_from(["txt", "json", "jpg", "__key__"]), st.binary(max_size=80) | TEXT), JSON_VALUES)
def test_shard_codec_on_any_members(raw: dict, meta: object) -> None:
    raw = dict(raw)
    if "json" in raw and isinstance(raw["json"], str):
        raw["json"] = json.dumps(meta).encode("utf-8")
    try:
        sample = ShardCodec(CharEncoder(), 64).parse(raw)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert sample.input_ids
    assert len(sample.labels) == len(GENRES)


@SETTINGS
@given(
    st.dictionaries(st.sampled_from(["json", "text.npy", "image.npy", "__key__"]), st.binary(max_size=120) | TEXT),
    JSON_VALUES,
    st.sampled_from(["float32", "float16", "int64", "bool", "complex64"]),
    st.lists(st.integers(0, 5), min_size=0, max_size=3),
)
def test_feature_codec_on_any_members(raw: dict, meta: object, dtype: str, shape: list[int]) -> None:
    raw = dict(raw)
    if isinstance(raw.get("json"), str):  # a real JSON document instead of random bytes
        raw["json"] = json.dumps(meta).encode("utf-8")
    if isinstance(raw.get("text.npy"), str):  # a real .npy of any dtype and shape
        buffer = io.BytesIO()
        np.save(buffer, np.ones(shape, dtype=dtype))
        raw["text.npy"] = buffer.getvalue()
    try:
        sample = FeatureCodec().parse(raw)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert len(sample.labels) == len(GENRES)
    for rows in (sample.text, sample.image):
        assert rows is None or (rows.ndim == 2 and np.isfinite(rows).all())


# --------------------------------------------------------------------------- predict inputs


@SETTINGS
@given(
    st.one_of(
        JSON_VALUES.map(json.dumps),
        TEXT,
        st.fixed_dictionaries(
            {"id": TEXT | JSON_SCALARS}, optional={"plot": TEXT | JSON_VALUES, "poster": TEXT | JSON_SCALARS}
        ).map(json.dumps),
    )
)
def test_predict_jsonl_line_on_any_text(line: str) -> None:
    movie = _jsonl_movie(Path("in.jsonl"), 1, line, set(), truncated=False)
    if movie.error is not None:
        assert movie.error.startswith("in.jsonl:1: ")
        assert "\n" not in movie.error
        return
    utf8_safe([movie.id, movie.plot if isinstance(movie.plot, (str, list)) else None])


def test_predict_jsonl_line_nested_too_deeply() -> None:
    movie = _jsonl_movie(Path("in.jsonl"), 3, "[" * 200_000 + "]" * 200_000, set(), truncated=False)
    assert movie.error == "in.jsonl:3: JSON nested too deeply to read"
