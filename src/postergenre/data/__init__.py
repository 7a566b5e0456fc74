"""Data: reading layouts and label files, decoding posters, caching, tensors."""

from postergenre.data.cache import PosterCache, default_cache_dir
from postergenre.data.decode import decode_poster, resize_poster
from postergenre.data.labels import load_posters, parse_genres
from postergenre.data.records import PosterCollection, PosterRecord
from postergenre.data.targets import encode_targets, infer_task, resolve_genres

__all__ = [
    "PosterCache",
    "PosterCollection",
    "PosterRecord",
    "decode_poster",
    "default_cache_dir",
    "encode_targets",
    "infer_task",
    "load_posters",
    "parse_genres",
    "resize_poster",
    "resolve_genres",
]
