"""PEFT interoperability: our prompts load in PEFT with the same logits, PEFT adapters load in ours."""

import copy
import json

import pytest
import torch
from peft import PeftModel, PromptTuningConfig, get_peft_model
from safetensors.torch import load_file

from softprompt.data import training_batch
from softprompt.errors import SoftPromptError
from softprompt.hub import resolve_model_path
from softprompt.model import SoftPromptModel, init_prompt, read_prompt
from softprompt.peft_compat import export_peft

PAIRS = [
    ("Article: The council met on Tuesday to vote.\nSummary:", " Council votes ."),
    ("Bulgarian: Заседанието е открито.\nEnglish:", " The sitting is open ."),
    ("Context: The river runs east.\nQuestion: Where does the river run?\nAnswer:", " east"),
]


@pytest.fixture()
def checkpoint(tiny, tmp_path):
    """A prompt folder as training writes it, and the model that wrote it."""
    base, tokenizer = tiny
    model = SoftPromptModel(
        copy.deepcopy(base), init_prompt(base, tokenizer, "vocab", 5, seed=7), base_id="builtin:tiny-gpt2"
    )
    model.save_prompt(tmp_path / "epoch_003", task="sum", epoch=3)
    return tmp_path / "epoch_003", model


def test_exported_adapter_loads_in_peft_with_the_same_logits(checkpoint, tiny, tmp_path):
    base, tokenizer = tiny
    ckpt, ours = checkpoint
    out = export_peft(ckpt, tmp_path / "peft")
    assert set(load_file(str(out / "adapter_model.safetensors"))) == {"prompt_embeddings"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 5
    assert config["base_model_name_or_path"] == resolve_model_path("builtin:tiny-gpt2")  # a folder PEFT can load

    theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(out))
    theirs.eval()
    loaded = theirs.prompt_encoder["default"].embedding.weight.detach()
    assert torch.equal(loaded, ours.prompt.detach())  # not PEFT's random init: the key name was right

    rows = [{"source_ids": tokenizer(s)["input_ids"], "target_ids": tokenizer(t)["input_ids"]} for s, t in PAIRS]
    batch = training_batch(rows, tokenizer.pad_token_id)  # right-padded: the layout both share
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"], return_logits=True).logits
        b = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert a.shape == b.shape  # [B, P + L, V]: PEFT returns the prompt positions too
    real = torch.nn.functional.pad(batch["attention_mask"], (5, 0), value=1).bool()  # pads' logits are nobody's
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)
    without = SoftPromptModel(copy.deepcopy(base), torch.zeros_like(ours.prompt))
    with torch.no_grad():
        c = without(batch["input_ids"], batch["attention_mask"], return_logits=True).logits
    assert (c[real] - b[real]).abs().max() > 1e-2  # the prompt moves the logits: the check has teeth


def test_load_prompt_reads_the_exported_adapter_exactly(checkpoint, tiny, tmp_path):
    base, _ = tiny
    ckpt, ours = checkpoint
    out = export_peft(ckpt, tmp_path / "peft")
    prompt, meta = read_prompt(out)
    assert torch.equal(prompt, ours.prompt.detach())
    assert meta["base_model"] == "builtin:tiny-gpt2" and meta["task"] == "sum" and meta["epoch"] == 3
    other = SoftPromptModel(copy.deepcopy(base), torch.zeros(5, prompt.shape[1]), base_id="builtin:tiny-gpt2")
    other.load_prompt(out)
    assert torch.equal(other.prompt.detach(), ours.prompt.detach())
    wrong = SoftPromptModel(copy.deepcopy(base), torch.zeros(5, prompt.shape[1]), base_id="gpt2")
    with pytest.raises(SoftPromptError, match="trained on base model"):
        wrong.load_prompt(out)


def test_load_prompt_reads_an_adapter_peft_saved(tiny, tmp_path):
    base, _ = tiny
    peft_model = get_peft_model(copy.deepcopy(base), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    expected = peft_model.prompt_encoder["default"].embedding.weight.detach()
    prompt, meta = read_prompt(tmp_path / "adapter")
    assert torch.equal(prompt, expected)
    assert meta["base_model"] == base.config._name_or_path and meta["prompt_length"] == 6
    ours = SoftPromptModel(copy.deepcopy(base), torch.zeros(1, prompt.shape[1]))  # base id: the same folder
    ours.load_prompt(tmp_path / "adapter")
    assert torch.equal(ours.prompt.detach(), expected)


def test_adapters_that_are_not_prompts_are_clear_errors(checkpoint, tmp_path):
    ckpt, _ = checkpoint
    out = export_peft(ckpt, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
    with pytest.raises(SoftPromptError, match="a PEFT LORA adapter, not a prompt-tuning one"):
        read_prompt(out)
    (out / "adapter_config.json").write_text(json.dumps({**config, "num_virtual_tokens": 9}))
    with pytest.raises(SoftPromptError, match="num_virtual_tokens=9 but prompt_embeddings has 5 rows"):
        read_prompt(out)
    (out / "adapter_model.safetensors").unlink()
    with pytest.raises(SoftPromptError, match="no adapter_model.safetensors"):
        read_prompt(out)
    (out / "adapter_config.json").unlink()
    with pytest.raises(SoftPromptError, match="no prompt.safetensors in this directory"):
        read_prompt(out)
    with pytest.raises(SoftPromptError, match="another folder than the checkpoint"):
        export_peft(ckpt, ckpt)


def test_export_without_a_base_model_name_needs_one(tiny, tmp_path):
    base, _ = tiny
    SoftPromptModel(copy.deepcopy(base), torch.zeros(2, 64)).save_prompt(tmp_path / "p")
    json_path = tmp_path / "p" / "prompt.json"
    json_path.write_text(json.dumps({**json.loads(json_path.read_text()), "base_model": ""}))
    with pytest.raises(SoftPromptError, match="names no base model"):
        export_peft(tmp_path / "p", tmp_path / "out")
    out = export_peft(tmp_path / "p", tmp_path / "out", base_model="gpt2")
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "gpt2"
    assert read_prompt(out)[1]["base_model"] == "gpt2"  # and our loader checks the base against it
