"""What produced a result: the versions of this package, Python and the libraries that shape its numbers.

    versions()   # {"softprompt": "0.1.0", "python": "3.12.3", "torch": "2.13.0", ..., "sacrebleu": "2.4.3"}

metrics.json records them, so a score can be traced to the code that made it.
"""

from __future__ import annotations

import platform
from importlib import metadata

from . import __version__

VERSIONED = ("torch", "transformers", "datasets", "tokenizers", "rouge-score", "sacrebleu")
"""The libraries whose versions can change a prediction or a score (None where one is not installed)."""


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"softprompt": __version__, "python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
