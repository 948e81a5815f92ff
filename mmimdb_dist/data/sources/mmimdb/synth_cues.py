"""What the synthetic MM-IMDb imitates, and where each genre's evidence lies.

The real dataset's statistics (split sizes, genre frequencies, plot lengths, poster sizes),
and the modality split that makes fusion worth learning: for each genre, whether its cue is
in the plot (cue words), on the poster (a shape in the genre's colour), or weakly in both
(see `synth.py` beside this module for the whole design).
"""

from __future__ import annotations

from dataclasses import dataclass

# Movies per genre in the real 25,959-movie MM-IMDb; frequencies are count / REAL_NUM_MOVIES.
REAL_NUM_MOVIES = 25_959
REAL_GENRE_COUNTS: dict[str, int] = {
    "Drama": 13967,
    "Comedy": 8592,
    "Romance": 5364,
    "Thriller": 5192,
    "Crime": 3838,
    "Action": 3550,
    "Adventure": 2710,
    "Horror": 2703,
    "Documentary": 2082,
    "Mystery": 2057,
    "Sci-Fi": 1991,
    "Fantasy": 1933,
    "Family": 1668,
    "Biography": 1343,
    "War": 1335,
    "History": 1143,
    "Music": 1045,
    "Animation": 997,
    "Musical": 841,
    "Western": 705,
    "Sport": 634,
    "Short": 471,
    "Film-Noir": 338,
}
# Chance that a movie also carries each dropped genre (rare, as in the raw files).
DROPPED_GENRE_PROB = 0.003
# Official split sizes; synthetic splits keep the proportions.
REAL_SPLIT_SIZES: dict[str, int] = {"train": 15552, "dev": 2608, "test": 7799}

# Longest plot per movie: log-normal with median 115 words and P(> 400 words) ~ 7% (the
# target is a little lower because summaries end at a sentence boundary).
PLOT_MEDIAN_WORDS = 114
PLOT_LOG_SIGMA = 0.87
PLOT_MIN_WORDS, PLOT_MAX_WORDS = 12, 1500
NUM_PLOTS_WEIGHTS = (0.45, 0.30, 0.15, 0.10)  # 1, 2, 3, 4 summaries

POSTER_WIDTH_RANGE = (300, 800)
POSTER_ASPECT_RANGE = (1.40, 1.56)  # height / width; real posters are ~2:3

# --------------------------------------------------------------------------- modality split

GENRE_MODALITY: dict[str, str] = {
    "Drama": "both",
    "Comedy": "image",
    "Romance": "text",
    "Thriller": "image",
    "Crime": "text",
    "Action": "image",
    "Adventure": "both",
    "Horror": "image",
    "Documentary": "text",
    "Mystery": "text",
    "Sci-Fi": "image",
    "Fantasy": "both",
    "Family": "image",
    "Biography": "text",
    "War": "text",
    "History": "both",
    "Music": "text",
    "Animation": "image",
    "Musical": "text",
    "Western": "image",
    "Sport": "text",
    "Short": "both",
    "Film-Noir": "image",
}
# Chance that a movie of the genre carries the cue in (plot, poster), by modality.
CUE_PROB: dict[str, tuple[float, float]] = {
    "text": (0.85, 0.0),
    "image": (0.08, 0.85),
    "both": (0.5, 0.5),
}
PLOT_CUE_DROPOUT = 0.1  # a summary of a cued movie still lacks the cue this often
PLOT_DECOY_PROB = 0.2  # a summary gets a cue word of a genre the movie does not have
POSTER_DECOY_PROB = 0.15  # a poster gets the shape of a genre the movie does not have

GENRE_CUE_WORDS: dict[str, tuple[str, ...]] = {
    "Romance": ("love", "romance", "wedding", "kiss", "lovers", "affair", "boyfriend", "girlfriend"),
    "Crime": ("detective", "gangster", "heist", "murder", "police", "robbery", "mafia", "smuggler"),
    "Documentary": (
        "interviews",
        "footage",
        "archival",
        "filmmaker",
        "documentary",
        "testimonies",
        "reportage",
        "chronicles",
    ),
    "Mystery": ("clue", "secret", "disappearance", "riddle", "enigma", "puzzle", "suspect", "hidden"),
    "Biography": ("biography", "memoir", "legacy", "biopic", "autobiography", "lifelong", "renowned", "pioneer"),
    "War": ("soldiers", "battalion", "battlefield", "army", "trenches", "sergeant", "invasion", "platoon"),
    "Music": ("band", "guitar", "singer", "concert", "album", "rockstar", "musician", "tour"),
    "Musical": ("song", "dance", "stage", "broadway", "chorus", "sings", "dancing", "showstopper"),
    "Sport": ("team", "coach", "championship", "football", "boxing", "match", "tournament", "athlete"),
    "Drama": ("struggle", "grief", "tragedy", "emotional", "redemption", "sacrifice", "heartbreak", "turmoil"),
    "Adventure": ("quest", "expedition", "jungle", "treasure", "journey", "island", "explorer", "voyage"),
    "Fantasy": ("wizard", "magic", "dragon", "kingdom", "sorcerer", "spell", "enchanted", "elf"),
    "History": ("century", "empire", "revolution", "dynasty", "historical", "ancient", "monarch", "colonial"),
    "Short": ("vignette", "brief", "sketch", "glimpse", "minutes", "experimental", "fragment", "snippet"),
    "Comedy": ("hilarious", "comedy", "wacky", "funny", "prank", "slapstick"),
    "Thriller": ("suspense", "conspiracy", "hunted", "tension", "chase", "stalker"),
    "Action": ("explosion", "gunfight", "martial", "commando", "mission", "rescue"),
    "Horror": ("demon", "ghost", "haunted", "zombie", "terror", "blood"),
    "Sci-Fi": ("alien", "spaceship", "robot", "futuristic", "planet", "laboratory"),
    "Family": ("kids", "puppy", "parents", "holiday", "siblings", "school"),
    "Animation": ("animated", "cartoon", "talking", "creatures", "toys", "critters"),
    "Western": ("cowboy", "sheriff", "ranch", "outlaw", "saloon", "frontier"),
    "Film-Noir": ("noir", "femme", "fatale", "gumshoe", "dame", "nightclub"),
}


@dataclass(frozen=True)
class PosterCue:
    """A genre's look: an RGB colour and the shape it is drawn as."""

    rgb: tuple[int, int, int]
    shape: str
    # Multiplies the background brightness when the cue is present (dark horror posters).
    background_gain: float = 1.0
    # Fraction of the poster area the shape covers, before per-movie jitter.
    area: float = 0.14


POSTER_CUES: dict[str, PosterCue] = {
    "Comedy": PosterCue((250, 215, 40), "disc", background_gain=1.25),
    "Thriller": PosterCue((25, 45, 150), "column", background_gain=0.6),
    "Action": PosterCue((255, 100, 10), "slashes"),
    "Horror": PosterCue((140, 5, 10), "spike", background_gain=0.5),
    "Sci-Fi": PosterCue((0, 225, 235), "ring"),
    "Family": PosterCue((255, 140, 200), "box", background_gain=1.2),
    "Animation": PosterCue((60, 210, 50), "dots"),
    "Western": PosterCue((175, 105, 45), "horizon"),
    "Film-Noir": PosterCue((245, 245, 245), "blinds"),
    "Drama": PosterCue((230, 60, 90), "box", area=0.08),
    "Adventure": PosterCue((0, 120, 80), "spike", area=0.08),
    "Fantasy": PosterCue((150, 50, 230), "disc", area=0.08),
    "History": PosterCue((110, 100, 20), "column", area=0.08),
    "Short": PosterCue((240, 0, 200), "ring", area=0.08),
}
