"""prompt.method and its options at load, and the one-line refusals of what a method cannot do."""

import copy

import pytest
import torch

from softprompt.config import Method, load_config
from softprompt.errors import ConfigError, SoftPromptError
from softprompt.inspection import inspect_prompt
from softprompt.prefix import PrefixEncoder, PrefixModel, cache_layout

SMOKE = "configs/smoke/qna.yaml"


def test_prompt_tuning_is_the_default_and_its_config_dict_has_no_prompt_section():
    cfg = load_config(SMOKE)
    assert cfg.prompt.method is Method.PROMPT_TUNING
    assert "prompt" not in cfg.to_dict()  # config.yaml and checkpoints of a prompt-tuning run read as before
    other = load_config(SMOKE, ["prompt.method=p_tuning", "prompt.encoder=lstm"])
    assert other.to_dict()["prompt"] == {
        "method": "p_tuning",
        "encoder": "lstm",
        "encoder_hidden_size": None,
        "prefix_projection": False,
    }


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["prompt.method=prefix"], "prompt.method: must be one of prompt_tuning, p_tuning, prefix_tuning, got"),
        (["prompt.encoder=mlp"], "prompt.encoder is an option of p_tuning, not of prompt.method prompt_tuning"),
        (["prompt.encoder_hidden_size=8"], "prompt.encoder_hidden_size is an option of p_tuning or prefix_tuning"),
        (["prompt.prefix_projection=true"], "prompt.prefix_projection is an option of prefix_tuning, not of"),
        (["prompt.method=prefix_tuning", "prompt.encoder=lstm"], "prompt.encoder is an option of p_tuning, not"),
        (["prompt.method=prefix_tuning", "prompt.encoder_hidden_size=8"], "needs prompt.prefix_projection: true"),
        (["prompt.method=p_tuning", "prompt.prefix_projection=true"], "not of prompt.method p_tuning"),
        (["prompt.method=prefix_tuning", "train.gradient_checkpointing=true"], "train.gradient_checkpointing does"),
        (["prompt.method=p_tuning", "train.strategy=fsdp"], "train.strategy fsdp is for prompt.method prompt_tuning"),
    ],
)
def test_bad_method_settings_are_one_line_each(sets, message):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, sets)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_prompt_key_is_named():
    with pytest.raises(ConfigError, match="prompt has no key 'projection' \\(did you mean 'prefix_projection'"):
        load_config(SMOKE, ["prompt.projection=true"])


def test_prefix_tuning_on_an_unsupported_cache_layout_is_refused(tiny):
    base, _ = tiny
    other = copy.deepcopy(base)
    other.config.model_type = "gemma2"
    with pytest.raises(SoftPromptError, match="model type 'gemma2' keeps its attention cache in a layout"):
        cache_layout(other)


def test_inspection_refuses_a_prefix_prompt_in_one_line(tiny, tmp_path):
    base, _ = tiny
    layers, heads, dim = cache_layout(base)
    model = PrefixModel(base, PrefixEncoder(layers, heads * dim, init_kv=torch.zeros(2, layers * 2 * heads * dim)))
    model.save_prompt(tmp_path / "p", base_model="builtin:tiny-gpt2")
    with pytest.raises(SoftPromptError, match="inspection .* works for prompt_tuning and p_tuning prompts only"):
        inspect_prompt(tmp_path / "p")
