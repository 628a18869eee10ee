"""The one exception type users see.

Every mistake a user can make (a bad config, a missing file, an unreachable
model) is raised as `SoftPromptError` with a message that names the file, key
or line at fault. The command-line scripts print that message alone and exit
with status 2 (cli.run_cli); `--debug` shows the traceback as well.
"""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """An exception's first line (library messages run to many), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def offline_message(what: str, ident: str, err: Exception) -> str:
    """One paragraph: which model or dataset id could not be loaded, why, and how to work offline."""
    reason = first_line(err)
    if what == "dataset":
        options = (
            "use local JSON Lines files in the Hub schema (data.files: {train: ..., validation: ...}, as in "
            "configs/smoke/*.yaml); or set HF_HUB_OFFLINE=1 with the datasets cache already holding it"
        )
    else:
        options = (
            "point model.name_or_path to a local directory saved with save_pretrained; or set HF_HUB_OFFLINE=1 "
            "with the Hugging Face cache already holding it; or try the pipeline on the built-in model with "
            "configs/smoke/*.yaml (model.name_or_path: builtin:tiny-gpt2)"
        )
    return (
        f"could not load {what} '{ident}' ({reason}). The Hugging Face Hub could not be reached, or has no such "
        f"id. To work offline: {options}."
    )


class SoftPromptError(Exception):
    """A user-facing error: the message says what is wrong and where."""


class ConfigError(SoftPromptError):
    """A config file or `--set` override that does not describe a valid run."""
