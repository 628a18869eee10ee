"""p_tuning and prefix_tuning prompt files: export to PEFT adapters that load in PEFT with our logits, read back
exactly; PEFT's own adapters of those types read as ours; other adapter types and methods refused in one line."""

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, PrefixTuningConfig, get_peft_model

from softprompt.config import Encoder, ModelConfig
from softprompt.data import training_batch
from softprompt.errors import SoftPromptError
from softprompt.methods import build_for_prompt
from softprompt.model import SoftPromptModel
from softprompt.multi import load_prompts
from softprompt.p_tuning import PTuningModel
from softprompt.peft_compat import export_peft
from softprompt.prefix import PrefixEncoder, PrefixModel, cache_layout
from softprompt.prompt_encoders import PromptEncoder
from softprompt.prompt_file import read_prompt

PAIRS = [
    ("Article: The council met on Tuesday to vote.\nSummary:", " Council votes ."),
    ("Context: The river runs east.\nQuestion: Where does the river run?\nAnswer:", " east"),
]
TINY = "builtin:tiny-gpt2"


def trained_like(method: str, base) -> SoftPromptModel:
    """A model of `method` with random (seeded) encoder weights, as if trained."""
    torch.manual_seed(3)
    if method == "p_tuning":
        return PTuningModel(copy.deepcopy(base), PromptEncoder(torch.randn(4, 64), Encoder.LSTM, 16), base_id=TINY)
    layers, heads, dim = cache_layout(base)
    encoder = PrefixEncoder(layers, heads * dim, init_inputs=torch.randn(4, heads * dim), hidden=16)
    return PrefixModel(copy.deepcopy(base), encoder, base_id=TINY)


def logits(model, batch):
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], return_logits=True).logits


@pytest.mark.parametrize("method", ["p_tuning", "prefix_tuning"])
def test_exported_adapter_loads_in_peft_with_our_logits_and_reads_back_exactly(method, tiny, tmp_path):
    base, tokenizer = tiny
    ours = trained_like(method, base)
    ours.save_prompt(tmp_path / "ckpt", task="qna")
    out = export_peft(tmp_path / "ckpt", tmp_path / "peft")
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == method.upper()
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
    rows = [{"source_ids": tokenizer(s)["input_ids"], "target_ids": tokenizer(t)["input_ids"]} for s, t in PAIRS]
    batch = training_batch(rows, tokenizer.pad_token_id)  # right-padded: the layout PEFT and ours share
    a = logits(ours, batch)
    with torch.no_grad():
        b = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    P = 4 if method == "p_tuning" else 0  # PEFT's p_tuning logits cover its prompt positions too
    real = torch.nn.functional.pad(batch["attention_mask"], (P, 0), value=1).bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)
    with torch.no_grad():  # teeth: the prompt moves the logits
        plain = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["attention_mask"].bool()
    assert (a[:, P:][mask] - plain[mask]).abs().max() > 1e-3

    back, _ = build_for_prompt(ModelConfig(name_or_path=TINY, init="random"), read_prompt(out)[1])
    back.load_prompt(out)
    assert torch.equal(back.final_prompt(), ours.final_prompt())
    torch.testing.assert_close(logits(back, batch), a, atol=1e-5, rtol=0)


def test_an_adapter_peft_trained_for_prefix_tuning_reads_as_ours(tiny, tmp_path):
    base, tokenizer = tiny
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=8
    )
    theirs = get_peft_model(copy.deepcopy(base), config)
    theirs.save_pretrained(str(tmp_path / "adapter"))  # PEFT saves the projection's output, the final prefixes
    ours, _ = build_for_prompt(ModelConfig(name_or_path=TINY, init="random"), read_prompt(tmp_path / "adapter")[1])
    ours.load_prompt(tmp_path / "adapter", check_base=False)
    rows = [{"source_ids": tokenizer(s)["input_ids"], "target_ids": tokenizer(t)["input_ids"]} for s, t in PAIRS]
    batch = training_batch(rows, tokenizer.pad_token_id)
    theirs.eval()
    with torch.no_grad():
        b = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits(ours, batch)[real], b[real], atol=1e-5, rtol=0)


def test_wrong_adapters_and_methods_are_one_line_refusals(tiny, tmp_path):
    base, _ = tiny
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["c_attn"]))
    lora.save_pretrained(str(tmp_path / "lora"))
    with pytest.raises(SoftPromptError, match="a PEFT LORA adapter, not a prompt-tuning one"):
        read_prompt(tmp_path / "lora")
    prefix = trained_like("prefix_tuning", base)
    prefix.save_prompt(tmp_path / "prefix")
    plain = SoftPromptModel(copy.deepcopy(base), torch.zeros(4, 64), base_id=TINY)
    with pytest.raises(SoftPromptError, match="holds a prefix_tuning prompt .*with prompt.method: prefix_tuning"):
        plain.load_prompt(tmp_path / "prefix")
    with pytest.raises(SoftPromptError, match="prefix_tuning prompt cannot join a mixed-task batch"):
        load_prompts(base, [tmp_path / "prefix"], base_id=TINY)
    plain.save_prompt(tmp_path / "vectors")
    with pytest.raises(SoftPromptError, match="holds a prompt_tuning prompt .*not a prefix_tuning one"):
        prefix.load_prompt(tmp_path / "vectors")
