"""The built-in models' recipe is exact: run twice from scratch, or killed and resumed, it gives the same weights."""

import torch

from softprompt.pretrain import Recipe, pretrain


def test_two_builds_of_the_first_steps_give_the_same_weights():
    threads = torch.get_num_threads()
    try:
        models = [pretrain(Recipe(), steps=20, log=lambda m: None)[0] for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_pretraining_equals_an_uninterrupted_one(tmp_path):
    recipe = Recipe(n_layer=2, n_embd=32, steps=6, batch_size=4, warmup_steps=2)
    threads = torch.get_num_threads()
    try:
        straight, _, straight_losses = pretrain(recipe, log=lambda m: None)
        pretrain(recipe, steps=3, log=lambda m: None, state_dir=tmp_path / "state", save_every=3)  # the "kill"
        seen = []
        resumed, _, resumed_losses = pretrain(recipe, log=seen.append, state_dir=tmp_path / "state", save_every=3)
    finally:
        torch.set_num_threads(threads)
    assert seen[0] == f"resumed from {tmp_path / 'state'} at step 3"
    assert resumed_losses == straight_losses
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
