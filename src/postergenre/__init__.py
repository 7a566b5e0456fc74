"""PosterGenre: predict a movie's genres from its poster."""

__version__ = "0.1.0"

__all__ = ["__version__"]
