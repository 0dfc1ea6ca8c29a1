"""'Did you mean' for names a user types: rule ids, config keys, ``--model`` names."""

from __future__ import annotations

import difflib
from typing import Iterable

#: Up to this many candidates, a miss lists them all.
FEW = 6


def did_you_mean(word: str, candidates: Iterable[str], *, what: str = "choices") -> str:
    """A suffix for an error message: `` (did you mean 'X'?)``, or `` (X: a, b, c)`` when the
    candidates are few and none is close, or ``''``.

    >>> did_you_mean("segmenter", ["Segmenter", "Block"])
    " (did you mean 'Segmenter'?)"
    >>> did_you_mean("net", ["Encoder", "Decoder"], what="models in this file")
    ' (models in this file: Encoder, Decoder)'
    """
    names = list(dict.fromkeys(c for c in candidates if c))
    folded = {n.lower().replace("_", "-"): n for n in names}
    key = word.lower().replace("_", "-")
    close = [folded[key]] if key in folded else []
    close += [folded[m] for m in difflib.get_close_matches(key, list(folded), n=3, cutoff=0.6)
              if folded[m] not in close]
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close[:3]) + "?)"
    if 0 < len(names) <= FEW:
        return f" ({what}: {', '.join(names)})"
    return ""
