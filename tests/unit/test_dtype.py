"""model.dtype: a bf16-stored base trains an fp32 prompt, resumes exactly, and its prompt loads onto an fp32
base; its loss is close to the fp32 base's; fp16 storage on a CPU is one clear error, at load and at run time."""

import importlib
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, script_cli
from softprompt.checkpoint import LATEST
from softprompt.config import ModelConfig, Precision, load_config
from softprompt.devices import autocast
from softprompt.errors import SoftPromptError
from softprompt.hub import load_base
from softprompt.methods import build_for_training
from softprompt.model import SoftPromptModel, build_model
from softprompt.peft_compat import ADAPTER_WEIGHTS, export_peft
from softprompt.train import train

# importlib: `softprompt.train` as an attribute is the train function the package exports, not the module.
TRAIN, EVALUATE = (importlib.import_module(f"softprompt.{m}") for m in ("train", "evaluate"))

CONFIG = ROOT / "tests" / "configs" / "smoke" / "sum.yaml"
# 8 examples in batches of 2: 4 optimizer steps per epoch, a mid-epoch checkpoint after step 2 of each.
SETS = [
    "model.dtype=bf16",
    "train.precision=bf16",
    "train.epochs=3",
    "train.save_every=1",
    "train.save_every_steps=2",
    "data.max_train_examples=8",
    "data.max_eval_examples=4",
]
MID_RUN = "epoch_001_step_000002"  # where the "killed" copy of the run resumes from


def _train(out, resume=False):
    """The bf16-stored smoke run in this process; returns its epoch train losses."""
    lines = []
    train(load_config(CONFIG, [*SETS, f"train.output_dir={out}"]), resume=resume, echo=lines.append, quiet=True,
          results_dir=None)  # fmt: skip
    return [float(l.rsplit(" ", 1)[1]) for l in lines if "Average train loss" in l]


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """One uninterrupted 3-epoch run on a bf16-stored base: (run folder, train losses, the model it trained)."""
    built = []

    def spy(*args, **kwargs):
        built.append(build_for_training(*args, **kwargs))
        return built[-1]

    out = tmp_path_factory.mktemp("bf16-base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TRAIN, "build_for_training", spy)
        losses = _train(out)
    return out / "smoke-sum", losses, built[0][0]


def test_bf16_base_trains_an_fp32_prompt_with_fp32_adamw_state(bf16_run):
    run_dir, losses, model = bf16_run
    assert {p.dtype for p in model.base.parameters()} == {torch.bfloat16}  # stored in bf16, not just autocast
    assert model.prompt.dtype == torch.float32
    assert len(losses) == 3 and losses[-1] < losses[0]
    state = load_file(str(run_dir / "epoch_003" / "trainer_state.safetensors"))
    moments = {k: v for k, v in state.items() if "exp_avg" in k}
    assert moments and all(v.dtype == torch.float32 for v in moments.values())  # AdamW's moments stay fp32
    first = load_file(str(run_dir / "epoch_001" / "prompt.safetensors"))["prompt"]
    last = load_file(str(run_dir / "epoch_003" / "prompt.safetensors"))["prompt"]
    assert first.dtype == last.dtype == torch.float32 and not torch.equal(first, last)


def test_bf16_base_resumes_bit_exactly_from_a_mid_epoch_checkpoint(bf16_run, tmp_path):
    run_dir, _, _ = bf16_run
    # What a kill right after MID_RUN was published leaves: that checkpoint as the newest, and log records
    # written after it (which --resume drops).
    copy = tmp_path / "smoke-sum"
    shutil.copytree(run_dir, copy)
    for ckpt in sorted(copy.glob("epoch_*")):
        if ckpt.name > MID_RUN:
            shutil.rmtree(ckpt)
    (copy / LATEST).write_text(MID_RUN + "\n")
    _train(tmp_path, resume=True)
    for epoch in ("epoch_002", "epoch_003"):
        a = load_file(str(run_dir / epoch / "prompt.safetensors"))["prompt"]
        b = load_file(str(copy / epoch / "prompt.safetensors"))["prompt"]
        assert torch.equal(a, b), epoch
    a, b = (load_file(str(d / "epoch_003" / "trainer_state.safetensors")) for d in (run_dir, copy))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_trained_prompt_loads_onto_an_fp32_base_and_exports_fp32(bf16_run, tmp_path):
    run_dir, _, _ = bf16_run
    trained = load_file(str(run_dir / "epoch_003" / "prompt.safetensors"))["prompt"]
    model, _ = build_model(load_config(CONFIG).model)  # an fp32 run's model
    assert model.base.get_input_embeddings().weight.dtype == torch.float32
    model.load_prompt(run_dir / "epoch_003")
    assert torch.equal(model.prompt.detach(), trained)
    adapter = load_file(str(export_peft(run_dir / "epoch_003", tmp_path / "peft") / ADAPTER_WEIGHTS))
    assert [v.dtype for v in adapter.values()] == [torch.float32]


def test_evaluation_runs_on_a_bf16_stored_base(bf16_run, evaluate_script, tmp_path):
    run_dir, _, _ = bf16_run
    sets = [a for s in [*SETS, f"train.output_dir={run_dir.parent}"] for a in ("--set", s)]
    flags = ["--limit", "2", "--max-new-tokens", "4", "--results-dir", str(tmp_path), "--quiet"]
    assert evaluate_script("--config", str(CONFIG), *sets, *flags) == 0
    assert list(tmp_path.rglob("metrics.json"))


def test_bf16_stored_loss_is_fp32_and_close_to_the_fp32_base(tiny):
    """bf16 keeps 8 significant bits: every weight and activation is off by up to 2^-9 relative (0.2%). The
    loss is a mean of target log-probabilities through a few layers, so those roundings largely average out:
    1% relative on the loss, and a gradient pointing the same way (cosine > 0.99), leave room for a few
    roundings per layer, while a wrong cast (a bf16 loss or a prompt cut off the graph) fails them."""
    base, tokenizer = tiny
    low_base, _ = load_base(ModelConfig(name_or_path="builtin:tiny-gpt2", dtype=Precision.BF16))
    prompt = torch.randn(4, base.config.n_embd, generator=torch.Generator().manual_seed(0)) * 0.1
    ids = torch.tensor([tokenizer("Article: the council met on Tuesday. Summary: council meets")["input_ids"]])
    labels = ids.clone()
    labels[:, :8] = -100
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    results = {}
    for name, b in (("fp32", base), ("bf16", low_base)):
        model = SoftPromptModel(b, prompt)
        for precision in (Precision.FP32, Precision.BF16):  # as loaded, and under train.precision bf16
            with autocast(torch.device("cpu"), precision):
                loss = model(**batch).loss
            loss.backward()
            results[name, precision] = loss.detach(), model.prompt.grad.clone()
            model.prompt.grad = None
    exact, exact_grad = results["fp32", Precision.FP32]
    for precision in (Precision.FP32, Precision.BF16):
        loss, grad = results["bf16", precision]
        assert loss.dtype == grad.dtype == torch.float32  # fp32 loss, fp32 gradient on the fp32 prompt
        assert loss.item() == pytest.approx(exact.item(), rel=1e-2)
        assert loss.item() != exact.item()  # the base really computed in bf16
        assert torch.nn.functional.cosine_similarity(grad.flatten(), exact_grad.flatten(), dim=0) > 0.99


def test_fp16_storage_on_cpu_is_refused_when_the_config_loads():
    with pytest.raises(SoftPromptError, match="model.dtype fp16 needs a GPU"):
        load_config(CONFIG, ["model.dtype=fp16", "train.device=cpu"])


def test_fp16_storage_that_resolves_to_the_cpu_stops_training_and_evaluation_before_any_work(
    monkeypatch, tmp_path, capsys, evaluate_script
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # train.device auto resolves to the CPU

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(TRAIN, "build_for_training", loaded)
    monkeypatch.setattr(EVALUATE, "build_for_prompt", loaded)
    sets = ["--set", "model.dtype=fp16", "--set", f"train.output_dir={tmp_path}"]
    evaluate = ["--baseline", "none", "--results-dir", str(tmp_path)]  # a baseline: no checkpoint to find first
    for script, extra in ((script_cli("train.py"), []), (evaluate_script, evaluate)):
        assert script("--config", str(CONFIG), *sets, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: model.dtype fp16 needs a GPU") and err.count("\n") == 1, err
    assert not list(tmp_path.rglob("epoch_*")) and not list(tmp_path.rglob("*.json"))
