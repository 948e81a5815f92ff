"""The 23 MM-IMDb genres and the mapping from the raw files' genre strings.

The raw JSON files carry 27 genres; the benchmark of Arevalo et al. (2017) keeps 23 and
orders them by frequency. Label vectors everywhere in this project use this order, so a
label index means the same genre in shards, models, checkpoints and reports.
"""

from __future__ import annotations

from collections.abc import Iterable

GENRES: tuple[str, ...] = (
    "Drama",
    "Comedy",
    "Romance",
    "Thriller",
    "Crime",
    "Action",
    "Adventure",
    "Horror",
    "Documentary",
    "Mystery",
    "Sci-Fi",
    "Fantasy",
    "Family",
    "Biography",
    "War",
    "History",
    "Music",
    "Animation",
    "Musical",
    "Western",
    "Sport",
    "Short",
    "Film-Noir",
)
NUM_GENRES = len(GENRES)

# Present in the raw files, absent from the benchmark (too rare to evaluate).
DROPPED_GENRES: frozenset[str] = frozenset({"Adult", "News", "Reality-TV", "Talk-Show"})

GENRE_INDEX: dict[str, int] = {name: i for i, name in enumerate(GENRES)}

# Spellings seen in IMDb dumps for the same genre; normalised before lookup.
_ALIASES = {
    "sci-fi": "Sci-Fi",
    "science fiction": "Sci-Fi",
    "scifi": "Sci-Fi",
    "film-noir": "Film-Noir",
    "film noir": "Film-Noir",
    "reality-tv": "Reality-TV",
    "talk-show": "Talk-Show",
}


def canonical_genre(name: str) -> str:
    """Return the canonical spelling of a raw genre string (case and alias insensitive)."""
    stripped = name.strip()
    if stripped in GENRE_INDEX or stripped in DROPPED_GENRES:
        return stripped
    lowered = stripped.lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    for known in (*GENRES, *DROPPED_GENRES):
        if known.lower() == lowered:
            return known
    return stripped


def map_genres(raw: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split raw genre strings into (kept canonical genres in frequency order, unknown ones).

    Dropped genres are neither kept nor reported as unknown: dropping them is the protocol.
    """
    kept: set[str] = set()
    unknown: list[str] = []
    for name in raw:
        canon = canonical_genre(name)
        if canon in GENRE_INDEX:
            kept.add(canon)
        elif canon not in DROPPED_GENRES:
            unknown.append(name)
    return sorted(kept, key=GENRE_INDEX.__getitem__), unknown


def multi_hot(genres: Iterable[str]) -> list[int]:
    """0/1 vector over GENRES for canonical genre names."""
    vec = [0] * NUM_GENRES
    for name in genres:
        vec[GENRE_INDEX[name]] = 1
    return vec
