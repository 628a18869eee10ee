"""train.precision: bf16 on CPU trains, resumes exactly, and its prompt loads in an fp32 run."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_script
from softprompt.config import Precision, load_config
from softprompt.model import SoftPromptModel, build_model
from softprompt.train import autocast

ARGS = ["--config", "configs/smoke/sum.yaml", "--quiet", "--set", "train.precision=bf16",
        "--set", "train.save_every=1", "--set", "data.max_train_examples=8", "--set", "data.max_eval_examples=4"]


def _train_losses(stdout):
    return [float(l.rsplit(" ", 1)[1]) for l in stdout.splitlines() if "Average train loss" in l]


def test_bf16_smoke_run_trains_resumes_exactly_and_loads_in_fp32(tmp_path):
    full = run_script("train.py", *ARGS, "--set", "train.epochs=3", "--set", f"train.output_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr
    losses = _train_losses(full.stdout)
    assert len(losses) == 3 and losses[-1] < losses[0]

    part = run_script("train.py", *ARGS, "--set", "train.epochs=1", "--set", f"train.output_dir={tmp_path / 'part'}")
    assert part.returncode == 0, part.stderr
    resumed = run_script("train.py", *ARGS, "--set", "train.epochs=3", "--set", f"train.output_dir={tmp_path / 'part'}",
                         "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "full" / "smoke-sum" / "epoch_003" / "prompt.safetensors"))["prompt"]
    b = load_file(str(tmp_path / "part" / "smoke-sum" / "epoch_003" / "prompt.safetensors"))["prompt"]
    assert a.dtype == torch.float32 and torch.equal(a, b)  # the prompt stays fp32; bf16 resume is exact too

    model, _ = build_model(load_config("configs/smoke/sum.yaml").model)  # an fp32 run's model
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
