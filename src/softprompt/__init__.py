"""softprompt: prompt tuning (soft prompts) on a frozen GPT-2, for QA, summarization and translation.

from softprompt import load_config, train
train(load_config("configs/smoke/sum.yaml"))
"""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import SoftPromptError  # noqa: E402
from .model import SoftPromptModel, build_model, init_prompt  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Config", "SoftPromptError", "SoftPromptModel", "build_model", "init_prompt", "load_config", "train"]
