"""How a name a person types finds a known name (bundled models, architectures): exactly, or
without case when that is unambiguous; an unknown name gets "did you mean ...?" (difflib).

One rule for every catalogue of names, so `--model IMDB-20` and `--arch Seed-CNN` behave alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def match_name(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` means: itself, else the one known name equal to it without case
    (None when there is none, or several that differ only in case)."""
    known = list(known)
    if name in known:
        return name
    folded = [k for k in known if k.casefold() == name.strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A hint for an unknown `name`: the closest known names (compared without case), or the
    list of all known names when none is close."""
    known = sorted(known)
    by_fold = {k.casefold(): k for k in known}
    close = difflib.get_close_matches(name.strip().casefold(), list(by_fold), n=3, cutoff=0.6)
    if close:
        names = [repr(by_fold[c]) for c in close]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        return f"did you mean {listed}?"
    return f"known: {', '.join(known) or 'none'}"
