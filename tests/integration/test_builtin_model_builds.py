"""The built-in model's recipe run twice from scratch gives the same weights after its first steps."""

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
