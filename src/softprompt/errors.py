"""The one exception type users see.

Every mistake a user can make (a bad config, a missing file, an unreachable
model) is raised as `SoftPromptError` with a message that names the file, key
or line at fault. The command-line scripts print that message alone and exit
with status 2; `--debug` shows the traceback as well.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class SoftPromptError(Exception):
    """A user-facing error: the message says what is wrong and where."""


class ConfigError(SoftPromptError):
    """A config file or `--set` override that does not describe a valid run."""


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
