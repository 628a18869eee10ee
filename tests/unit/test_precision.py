"""train.precision: bf16 on CPU trains, resumes exactly, and its prompt loads in an fp32 run."""

import pytest
import torch
from safetensors.torch import load_file

from softprompt.config import Precision, load_config
from softprompt.devices import autocast
from softprompt.model import SoftPromptModel, build_model
from softprompt.train import train

SETS = ["train.precision=bf16", "train.save_every=1", "data.max_train_examples=8", "data.max_eval_examples=4"]


def _train(out, epochs, resume=False):
    """The bf16 smoke run in this process; returns its epoch train losses."""
    lines = []
    cfg = load_config("tests/configs/smoke/sum.yaml", [*SETS, f"train.epochs={epochs}", f"train.output_dir={out}"])
    train(cfg, resume=resume, quiet=True, echo=lines.append, results_dir=None)
    return [float(l.rsplit(" ", 1)[1]) for l in lines if "Average train loss" in l]


def test_bf16_smoke_run_trains_resumes_exactly_and_loads_in_fp32(tmp_path):
    losses = _train(tmp_path / "full", 3)
    assert len(losses) == 3 and losses[-1] < losses[0]
    _train(tmp_path / "part", 1)
    _train(tmp_path / "part", 3, resume=True)
    a = load_file(str(tmp_path / "full" / "smoke-sum" / "epoch_003" / "prompt.safetensors"))["prompt"]
    b = load_file(str(tmp_path / "part" / "smoke-sum" / "epoch_003" / "prompt.safetensors"))["prompt"]
    assert a.dtype == torch.float32 and torch.equal(a, b)  # the prompt stays fp32; bf16 resume is exact too

    model, _ = build_model(load_config("tests/configs/smoke/sum.yaml").model)  # an fp32 run's model
    model.load_prompt(tmp_path / "full" / "smoke-sum" / "epoch_003")
    assert torch.equal(model.prompt.detach(), a)


def test_bf16_autocast_loss_is_fp32_and_close_to_fp32(tiny):
    base, tokenizer = tiny
    model = SoftPromptModel(base, torch.randn(4, base.config.n_embd) * 0.1)
    ids = torch.tensor([tokenizer("Article: the council met on Tuesday. Summary: council meets")["input_ids"]])
    labels = ids.clone()
    labels[:, :8] = -100
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    exact = model(**batch).loss
    with autocast(torch.device("cpu"), Precision.BF16):
        low = model(**batch).loss
    assert low.dtype == torch.float32  # cross-entropy computed in fp32 from bf16 logits
    assert low.item() == pytest.approx(exact.item(), rel=2e-2)
    assert low.item() != exact.item()  # autocast really ran in bf16
