"""mmimdb-dist: distributed multimodal (text + image) classification; MM-IMDb is its flagship dataset."""

__version__ = "0.1.0"
