"""Synthetic MM-IMDb: the embedded default dataset, in exactly the raw MM-IMDb layout.

The real archive is 8 GB behind a slow server; a pipeline that can only be exercised on it is
a pipeline nobody tests. This module writes `mmimdb/split.json`, `mmimdb/dataset/<id>.json`
and `mmimdb/dataset/<id>.jpeg` with the statistics that matter to the rest of the project:

* split proportions of the official split (15,552 / 2,608 / 7,799 of 25,959);
* per-genre frequencies proportional to the real counts, ~2.5 labels per movie, the four
  dropped genres appearing now and then;
* plot lists of 1-4 summaries whose longest has a median of ~115 words and a long tail
  (~7% above 400 words), so truncation and bucketing are exercised for real;
* portrait posters of varying widths (300-800 px, ~2:3) with textured content (gradient
  backdrop, soft blobs, genre-neutral shapes, title and credit strokes, film grain), so
  resizing and JPEG decoding at shard time cost what they cost on real posters.

Genres are learnable, and the evidence is split between the modalities on purpose so that a
fusion model has something to fuse (see `GENRE_MODALITY`):

* text-evident (cue words in the plot, no poster cue): Romance, Crime, Documentary,
  Mystery, Biography, War, Music, Musical, Sport;
* image-evident (a shape in the genre's colour on the poster, for some also a darker or
  lighter backdrop; only a rare cue word): Comedy, Thriller, Action, Horror, Sci-Fi,
  Family, Animation, Western, Film-Noir;
* both, weakly (each modality carries the cue about half the time): Drama, Adventure,
  Fantasy, History, Short.

Cues are noisy: sometimes missing, and decoy cues of genres a movie does not have are mixed
in. A text-only model therefore does well on text-evident genres and poorly on image-evident
ones, an image-only model the reverse, and a fusion model beats both on macro-F1.

`defect_rate` plants realistic defects (empty plot list, missing or zero-byte poster,
dropped-genres-only labels, plot as a string, PNG/CMYK/grayscale under `.jpeg`, unparsable
JSON) and records them in `mmimdb/defects.json` so the reader's skip paths can be tested.

Modules: `synth_cues` (the statistics imitated and the modality split), `synth_posters`
(rendering), and this one (plot text, movie records, defects, and writing the folder).

Everything is a function of (num_movies, seed): each movie draws from its own generator
seeded by (seed, index), so the output is byte-identical across runs and worker counts.
`split.json` is written last: a folder without it is an interrupted generation.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....atomic import atomic_write_json, atomic_write_text
from ....errors import DataError
from ....progress import progress as progress_bar
from .genres import DROPPED_GENRES, GENRES
from .synth_cues import (
    CUE_PROB,
    DROPPED_GENRE_PROB,
    GENRE_CUE_WORDS,
    GENRE_MODALITY,
    NUM_PLOTS_WEIGHTS,
    PLOT_CUE_DROPOUT,
    PLOT_DECOY_PROB,
    PLOT_LOG_SIGMA,
    PLOT_MAX_WORDS,
    PLOT_MEDIAN_WORDS,
    PLOT_MIN_WORDS,
    POSTER_ASPECT_RANGE,
    POSTER_CUES,
    POSTER_DECOY_PROB,
    POSTER_WIDTH_RANGE,
    REAL_GENRE_COUNTS,
    REAL_NUM_MOVIES,
    REAL_SPLIT_SIZES,
)
from .synth_posters import PosterSpec, grain_tile, write_poster

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- filler text

_NAMES = (
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Elena",
    "Frank",
    "Grace",
    "Henry",
    "Iris",
    "Jack",
    "Karen",
    "Leo",
    "Maria",
    "Nick",
    "Olivia",
    "Paul",
    "Rosa",
    "Sam",
    "Tom",
    "Vera",
    "Walter",
    "Yusuf",
    "Zoe",
    "Marco",
    "Lena",
    "Omar",
    "Julia",
    "Hugo",
    "Nora",
    "Victor",
    "Ruth",
    "Felix",
    "Ines",
    "Pablo",
    "Mei",
    "Kenji",
    "Amara",
    "Lars",
    "Sofia",
    "Ivan",
)
_VERBS = (
    "meets",
    "finds",
    "leaves",
    "visits",
    "follows",
    "remembers",
    "notices",
    "returns to",
    "moves into",
    "inherits",
    "receives",
    "loses",
    "helps",
    "questions",
    "learns about",
    "decides to sell",
    "tries to fix",
    "agrees to share",
    "keeps",
    "changes",
    "hears about",
    "watches",
    "carries",
    "builds",
    "buys",
    "writes about",
    "opens",
    "refuses",
    "accepts",
    "avoids",
    "borrows",
    "cleans",
    "describes",
    "explains",
    "paints",
    "plans",
    "repairs",
    "rents",
    "shows",
    "takes over",
)
_ADJECTIVES = (
    "old",
    "young",
    "quiet",
    "small",
    "large",
    "local",
    "new",
    "former",
    "distant",
    "ordinary",
    "wealthy",
    "poor",
    "lonely",
    "curious",
    "busy",
    "simple",
    "difficult",
    "unexpected",
    "long",
    "stubborn",
    "kind",
    "ambitious",
    "shy",
    "proud",
    "tired",
    "gentle",
    "careful",
    "clever",
    "nervous",
    "generous",
    "modest",
    "restless",
    "cheerful",
    "honest",
)
_NOUNS = (
    "letter",
    "house",
    "car",
    "job",
    "friend",
    "neighbour",
    "brother",
    "sister",
    "father",
    "mother",
    "stranger",
    "photograph",
    "book",
    "message",
    "plan",
    "offer",
    "decision",
    "problem",
    "opportunity",
    "apartment",
    "company",
    "office",
    "boss",
    "colleague",
    "teacher",
    "doctor",
    "lawyer",
    "journalist",
    "writer",
    "student",
    "farmer",
    "garden",
    "restaurant",
    "hotel",
    "bicycle",
    "key",
    "map",
    "phone",
    "money",
    "gift",
    "promise",
    "choice",
    "routine",
    "cousin",
    "uncle",
    "aunt",
    "landlord",
    "shop",
    "boat",
    "notebook",
)
_PLACES = (
    "town",
    "city",
    "village",
    "countryside",
    "suburbs",
    "coast",
    "mountains",
    "capital",
    "neighbourhood",
    "harbour",
    "valley",
    "north",
    "south",
    "old quarter",
    "port",
)
_PREPOSITIONS = ("in", "near", "across", "outside", "around", "behind", "beyond", "far from")
_OPENERS = (
    "One day,",
    "Years later,",
    "Soon",
    "Meanwhile,",
    "Eventually,",
    "At first,",
    "That summer,",
    "After a while,",
    "Before long,",
    "Later,",
)
_CONNECTORS = ("when", "after", "while", "because", "although", "until", "before")
_TITLE_WORDS = (
    "Light",
    "River",
    "Road",
    "Night",
    "Summer",
    "House",
    "Garden",
    "Letter",
    "Window",
    "Stone",
    "Winter",
    "Harbour",
    "Bridge",
    "Silence",
    "Promise",
    "Shadow",
    "Door",
    "Field",
)


def _sentence(rng: random.Random) -> list[str]:
    """One filler sentence: "<Name> <verb> the <adjective> <noun> ...", as a word list."""
    words = [rng.choice(_NAMES), rng.choice(_VERBS), "the", rng.choice(_ADJECTIVES), rng.choice(_NOUNS)]
    kind = rng.random()
    if kind < 0.35:
        words += [rng.choice(_PREPOSITIONS), "the", rng.choice(_PLACES)]
    elif kind < 0.7:
        words += [rng.choice(_CONNECTORS), rng.choice(_NAMES), rng.choice(_VERBS), "the", rng.choice(_NOUNS)]
    if rng.random() < 0.25:
        words = [*rng.choice(_OPENERS).split(), *words]
    words[0] = words[0][0].upper() + words[0][1:]
    words[-1] += "."
    return " ".join(words).split()  # multi-word verbs count as the words they are


def _plot(rng: random.Random, num_words: int, cue_words: list[str]) -> str:
    """Filler sentences up to about `num_words`; each cue word is the object of a sentence."""
    sentences: list[list[str]] = []
    total = 0
    while True:
        words = _sentence(rng)
        # Stop at the sentence boundary nearest the target, so lengths are not biased upwards.
        if sentences and total + len(words) - num_words > num_words - total:
            break
        sentences.append(words)
        total += len(words)
    # More cues than sentences (a very short summary): extra sentences carry the rest.
    while len(sentences) < len(cue_words):
        sentences.append(_sentence(rng))
    for cue, index in zip(cue_words, rng.sample(range(len(sentences)), len(cue_words)), strict=True):
        words = sentences[index]
        slot = words.index("the") + 2  # the noun of the first "the <adjective> <noun>"
        words[slot] = cue + ("." if words[slot].endswith(".") else "")
    return " ".join(word for words in sentences for word in words)


# --------------------------------------------------------------------------- movies


DEFECT_KINDS: tuple[str, ...] = (
    "empty_plot",
    "missing_poster",
    "zero_byte_poster",
    "dropped_genres_only",
    "plot_as_string",
    "png_poster",
    "cmyk_poster",
    "grayscale_poster",
    "bad_json",
)
# Defects that concern the poster file and are applied where the poster is rendered.
_POSTER_DEFECTS = frozenset({"missing_poster", "zero_byte_poster", "png_poster", "cmyk_poster", "grayscale_poster"})


def _movie_rng(seed: int, index: int, stream: str) -> random.Random:
    # String seeds are hashed with SHA-512, so this is stable across processes and runs.
    return random.Random(f"mmimdb-synth:{seed}:{index}:{stream}")


def _sample_genres(rng: random.Random) -> list[str]:
    """Independent draws at the real frequencies; a movie without any gets one by frequency."""
    genres = [g for g in GENRES if rng.random() < REAL_GENRE_COUNTS[g] / REAL_NUM_MOVIES]
    if not genres:
        genres = rng.choices(GENRES, weights=[REAL_GENRE_COUNTS[g] for g in GENRES])
    return genres


def _plot_lengths(rng: random.Random) -> list[int]:
    longest = PLOT_MEDIAN_WORDS * math.exp(rng.gauss(0.0, PLOT_LOG_SIGMA))
    longest = int(min(max(longest, PLOT_MIN_WORDS), PLOT_MAX_WORDS))
    count = rng.choices((1, 2, 3, 4), weights=NUM_PLOTS_WEIGHTS)[0]
    lengths = [longest] + [max(PLOT_MIN_WORDS, int(longest * rng.uniform(0.15, 0.8))) for _ in range(count - 1)]
    rng.shuffle(lengths)
    return lengths


def _plots(rng: random.Random, genres: list[str]) -> list[str]:
    text_cued = [g for g in genres if rng.random() < CUE_PROB[GENRE_MODALITY[g]][0]]
    decoy_pool = [g for g in GENRE_CUE_WORDS if g not in genres]
    plots = []
    for num_words in _plot_lengths(rng):
        cues: list[str] = []
        for genre in text_cued:
            if rng.random() < PLOT_CUE_DROPOUT:
                continue
            count = 1 + int(num_words / 50 * rng.uniform(0.5, 1.5))
            cues += rng.choices(GENRE_CUE_WORDS[genre], k=count)
        if rng.random() < PLOT_DECOY_PROB:
            cues.append(rng.choice(GENRE_CUE_WORDS[rng.choice(decoy_pool)]))
        plots.append(_plot(rng, num_words, cues))
    return plots


def _poster_cues(rng: random.Random, genres: list[str]) -> list[str]:
    cues = [g for g in genres if g in POSTER_CUES and rng.random() < CUE_PROB[GENRE_MODALITY[g]][1]]
    if rng.random() < POSTER_DECOY_PROB:
        cues.append(rng.choice([g for g in POSTER_CUES if g not in genres]))
    rng.shuffle(cues)
    return cues


def _movie_record(rng: random.Random, movie_id: str, genres: list[str]) -> dict[str, Any]:
    """A raw JSON record with the keys of the real files that the project may look at."""
    title = f"The {rng.choice(_ADJECTIVES).title()} {rng.choice(_TITLE_WORDS)}"
    year = int(min(2016, max(1915, round(2016 - rng.expovariate(1 / 18)))))
    raw_genres = list(genres)
    for dropped in sorted(DROPPED_GENRES):
        if rng.random() < DROPPED_GENRE_PROB:
            raw_genres.append(dropped)
    rng.shuffle(raw_genres)
    plots = _plots(rng, genres)
    record = {
        "imdbID": str(int(movie_id)),
        "title": title,
        "year": year,
        "kind": "movie",
        "genres": raw_genres,
        "plot": plots,
        "rating": round(rng.uniform(2.0, 9.2), 1),
        "votes": int(rng.lognormvariate(7.0, 1.6)),
        "runtimes": [str(rng.randint(70, 160))],
        "languages": [
            rng.choice(("English", "English", "English", "French", "Spanish", "German", "Italian", "Japanese"))
        ],
        "director": [{"name": f"{rng.choice(_NAMES)} {rng.choice(_TITLE_WORDS)}"}],
        "cover url": f"https://example.invalid/posters/{movie_id}.jpg",
    }
    if rng.random() < 0.6:
        record["plot outline"] = min(plots, key=len)
    return record


def _apply_record_defect(record: dict[str, Any], defect: str) -> None:
    if defect == "empty_plot":
        record["plot"] = []
    elif defect == "dropped_genres_only":
        record["genres"] = ["Reality-TV"] if len(record["plot"]) % 2 else ["News", "Talk-Show"]
    elif defect == "plot_as_string":
        record["plot"] = max(record["plot"], key=len)


# --------------------------------------------------------------------------- dataset


def split_sizes(num_movies: int) -> dict[str, int]:
    """Train/dev/test sizes in the official proportions, summing to `num_movies`."""
    train = round(num_movies * REAL_SPLIT_SIZES["train"] / REAL_NUM_MOVIES)
    dev = round(num_movies * REAL_SPLIT_SIZES["dev"] / REAL_NUM_MOVIES)
    return {"train": train, "dev": dev, "test": num_movies - train - dev}


def _assign_defects(num_movies: int, seed: int, defect_rate: float) -> dict[int, str]:
    """round(rate * N) movies, chosen by the seed, kinds in turn so every kind shows up."""
    count = round(defect_rate * num_movies)
    chosen = random.Random(f"mmimdb-synth:{seed}:defects").sample(range(num_movies), count)
    return {index: DEFECT_KINDS[i % len(DEFECT_KINDS)] for i, index in enumerate(chosen)}


def _poster_size(rng: random.Random) -> tuple[int, int]:
    width = rng.randint(*POSTER_WIDTH_RANGE)
    return width, round(width * rng.uniform(*POSTER_ASPECT_RANGE))


@dataclass(frozen=True)
class MovieTask:
    """One movie to write; a pure function of these fields, so any process can do it."""

    dataset_dir: Path
    seed: int
    index: int
    movie_id: str
    defect: str | None = None


def write_movie(task: MovieTask) -> None:
    """Generate one movie and write its JSON and poster (atomically, each)."""
    rng = _movie_rng(task.seed, task.index, "movie")
    genres = _sample_genres(rng)
    record = _movie_record(rng, task.movie_id, genres)
    json_path = task.dataset_dir / f"{task.movie_id}.json"
    if task.defect == "bad_json":
        text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False)
        atomic_write_text(json_path, text[: len(text) // 2], durable=False)
    else:
        if task.defect is not None:
            _apply_record_defect(record, task.defect)
        atomic_write_json(json_path, record, durable=False)
    width, height = _poster_size(rng)
    write_poster(
        PosterSpec(
            path=task.dataset_dir / f"{task.movie_id}.jpeg",
            seed=task.seed,
            index=task.index,
            width=width,
            height=height,
            cues=_poster_cues(rng, genres),
            defect=task.defect if task.defect in _POSTER_DEFECTS else None,
        )
    )


def _write_movies(tasks: list[MovieTask], workers: int) -> None:
    progress = progress_bar(total=len(tasks), desc="synthetic movies", unit="movie")
    if workers <= 1:
        for task in tasks:
            write_movie(task)
            progress.update()
    else:
        # Movies are independent and seeded by index, so the order of completion is irrelevant.
        grain_tile()  # built once here; forked workers inherit it
        with _process_context().Pool(workers) as pool:
            for _ in pool.imap_unordered(write_movie, tasks, chunksize=16):
                progress.update()
    progress.close()


def _process_context() -> multiprocessing.context.BaseContext:
    """fork where available: workers start instantly and inherit the imported modules."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _warn_about_foreign_files(dataset_dir: Path, ids: set[str]) -> None:
    """Files of an earlier, different generation are left alone but not silently."""
    foreign = [
        path.name for path in dataset_dir.iterdir() if path.suffix in (".json", ".jpeg") and path.stem not in ids
    ]
    if foreign:
        logger.warning(
            "%s: %d files (e.g. %s) are not part of this dataset and are left as "
            "they are; split.json does not list them",
            dataset_dir,
            len(foreign),
            sorted(foreign)[0],
        )


def _remove_interrupted_writes(root: Path) -> None:
    """Temporary files of atomic writes that a killed run never renamed into place."""
    for path in [*root.glob(".*.tmp"), *(root / "dataset").glob(".*.tmp")]:
        logger.info("removing %s (left by an interrupted run)", path)
        path.unlink(missing_ok=True)


def generate_dataset(out_dir: Path, num_movies: int, seed: int = 0, defect_rate: float = 0.0, workers: int = 0) -> Path:
    """Write a synthetic MM-IMDb under `out_dir/mmimdb` and return that folder.

    `workers` is the number of processes writing movies; 0 or 1 writes from this process.
    The output does not depend on it. `mmimdb/defects.json` lists the movies given a
    defect (empty when `defect_rate` is 0); raw-layout readers ignore it.
    """
    if num_movies < 1:
        raise DataError(f"synthetic dataset: num_movies must be at least 1, got {num_movies}")
    if not 0.0 <= defect_rate <= 1.0:
        raise DataError(f"synthetic dataset: defect_rate must be in [0, 1], got {defect_rate}")
    root = Path(out_dir) / "mmimdb"
    dataset_dir = root / "dataset"
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dataset_dir}: cannot create the output folder ({exc.strerror})") from None
    split_path = root / "split.json"
    # Removed first and written last: its absence marks an unfinished generation.
    split_path.unlink(missing_ok=True)
    _remove_interrupted_writes(root)

    id_rng = random.Random(f"mmimdb-synth:{seed}:ids")
    ids = [f"{number:07d}" for number in id_rng.sample(range(1, 8_000_000), num_movies)]
    defects = _assign_defects(num_movies, seed, defect_rate)

    tasks = [MovieTask(dataset_dir, seed, index, movie_id, defects.get(index)) for index, movie_id in enumerate(ids)]
    _warn_about_foreign_files(dataset_dir, set(ids))
    _write_movies(tasks, workers)

    by_id = {ids[index]: kind for index, kind in sorted(defects.items())}
    atomic_write_json(
        root / "defects.json",
        {
            "defect_rate": defect_rate,
            "counts": dict(sorted(Counter(by_id.values()).items())),
            "movies": by_id,
        },
    )

    sizes = split_sizes(num_movies)
    order = list(ids)
    random.Random(f"mmimdb-synth:{seed}:split").shuffle(order)
    split = {
        "train": order[: sizes["train"]],
        "dev": order[sizes["train"] : sizes["train"] + sizes["dev"]],
        "test": order[sizes["train"] + sizes["dev"] :],
    }
    # Per-movie files skip their own fsyncs (thousands of them dominate the run time);
    # one sync makes them durable before split.json declares the dataset complete.
    if hasattr(os, "sync"):
        os.sync()
    atomic_write_json(split_path, split)
    logger.info("wrote %d synthetic movies (%d with defects) to %s", num_movies, len(defects), root)
    return root
