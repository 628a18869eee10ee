"""How every script under scripts/ runs: user-facing errors as one line on stderr and a non-zero exit.

if __name__ == "__main__":
    raise SystemExit(run_cli(main))     # SoftPromptError: "error: ..." and status 2; --debug: the traceback
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import SoftPromptError


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a script's `main`, turning user-facing errors into one line on stderr.

    With `--debug` among the arguments the traceback is shown instead.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        return int(main([a for a in args if a != "--debug"]) or 0)
    except SoftPromptError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: the last complete checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
