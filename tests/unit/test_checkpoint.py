"""Checkpoint files in process: never written from a NaN prompt or loss, truncated or missing files fail the
check, folders sort by epoch number, the fp16 loss scale survives, and the crash hooks count per run.
"""

import pytest
import torch

from softprompt import testing
from softprompt.checkpoint import latest_checkpoint, save_checkpoint, verify
from softprompt.errors import SoftPromptError
from softprompt.model import SoftPromptModel


def test_the_hooks_count_per_run_and_do_nothing_outside_one(monkeypatch):
    """Each `armed()` run counts its own batches: two runs in one process both get their 2nd batch NaN."""
    monkeypatch.setenv("SOFTPROMPT_TEST_NAN_BATCH", "2")

    def labelled() -> bool:
        return bool(testing.batch_built({"labels": torch.ones(1, 3, dtype=torch.long)})["labels"].ne(-100).any())

    for _ in range(2):
        with testing.armed():
            assert [labelled(), labelled(), labelled()] == [True, False, True]
    assert labelled() and labelled()  # outside a run: no batch is touched


def test_a_checkpoint_is_never_written_from_a_nan_prompt_or_loss(tiny, tmp_path):
    base, _ = tiny
    model = SoftPromptModel(base, torch.zeros(4, base.config.n_embd))
    optimizer = torch.optim.AdamW([model.prompt])
    good = save_checkpoint(tmp_path, 1, 6, model, optimizer, {}, {}, extra={"train_loss": 1.0, "val_loss": 2.0})
    with pytest.raises(
        SoftPromptError, match=r"epoch_002: val_loss nan; the run stopped without saving it .*epoch_001, is kept"
    ):
        save_checkpoint(tmp_path, 2, 12, model, optimizer, {}, {}, extra={"train_loss": 1.0, "val_loss": float("nan")})
    with torch.no_grad():
        model.prompt[0, 0] = float("inf")
    with pytest.raises(SoftPromptError, match="the prompt holds NaN or infinite values"):
        save_checkpoint(tmp_path, 2, 12, model, optimizer, {}, {})
    assert latest_checkpoint(tmp_path) == good and not (tmp_path / "epoch_002").exists()


def test_truncated_or_missing_checkpoint_files_fail_the_check(tiny, tmp_path):
    base, _ = tiny
    model = SoftPromptModel(base, torch.randn(4, base.config.n_embd))
    optimizer = torch.optim.AdamW([model.prompt])
    first = save_checkpoint(tmp_path, 1, 6, model, optimizer, {}, {})
    second = save_checkpoint(tmp_path, 2, 12, model, optimizer, {}, {})
    state = second / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:-10])
    assert "trainer_state.safetensors does not match its recorded SHA-256" in verify(second)
    (first / "prompt.json").unlink()
    assert "prompt.json is missing" in verify(first)
    warnings = []
    assert latest_checkpoint(tmp_path, warn=warnings.append) is None
    assert len(warnings) == 2 and "epoch_002" in warnings[0] and "epoch_001" in warnings[1]


def test_checkpoints_sort_by_epoch_number_not_by_name(tiny, tmp_path):
    base, _ = tiny
    model = SoftPromptModel(base, torch.randn(4, base.config.n_embd))
    optimizer = torch.optim.AdamW([model.prompt])
    for epoch in (999, 1000):
        save_checkpoint(tmp_path, epoch, epoch, model, optimizer, {}, {})
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_1000"


def test_fp16_loss_scale_survives_a_checkpoint(tiny, tmp_path):
    # fp16 training's GradScaler state is saved with the optimizer state: a resumed run keeps its loss scale
    # and growth counter instead of restarting at 65,536 and skipping its first steps for overflow.
    from softprompt.checkpoint import load_trainer_state
    from softprompt.model import SoftPromptModel, init_prompt

    base, tokenizer = tiny
    model = SoftPromptModel(base, init_prompt(base, tokenizer, "vocab", 3, seed=1))
    optimizer = torch.optim.AdamW([model.prompt], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    for found_inf in (True, False, False):  # one overflow halves the scale; two good steps count towards growth
        model.prompt.grad = torch.full_like(model.prompt, float("inf") if found_inf else 1.0)
        scaler.scale(torch.ones(()))  # the scale tensor is made lazily
        scaler.step(optimizer)
        scaler.update()
    saved = scaler.state_dict()
    assert saved["scale"] == 2.0**15 and saved["_growth_tracker"] == 2
    save_checkpoint(tmp_path, 1, 3, model, optimizer, {}, {"task": "qna"}, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    load_trainer_state(tmp_path / "epoch_001", model, torch.optim.AdamW([model.prompt], lr=0.1), fresh)
    assert fresh.state_dict() == saved
