"""mmimdb-dist: distributed multimodal movie-genre classification on MM-IMDb."""

__version__ = "0.1.0"
