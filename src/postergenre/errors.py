"""Errors that reach the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: the CLI prints the message and exits with code 2.

    `hint` (a class attribute, or set per instance) says how to change the outcome; the CLI
    appends it after the message, so the CLI never needs to know which error it caught."""

    hint: str | None = None

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        if hint is not None:
            self.hint = hint

    def one_line(self) -> str:
        """The message and its hint as one line."""
        message = f"{self}; {self.hint}" if self.hint else str(self)
        return message.replace("\n", " ")


class PosterDecodeError(UserError):
    """A file that is not a usable poster image (corrupt, truncated, too large, not an image)."""
