"""Errors that reach the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: the CLI prints the message and exits with code 2."""


class PosterDecodeError(UserError):
    """A file that is not a usable poster image (corrupt, truncated, too large, not an image)."""
