"""Data-parallel helpers in process: how global batches split over ranks, and the process group's timeout.
The torchrun runs are in tests/integration/test_distributed_runs.py.
"""

from softprompt.distributed import Dist, split_batches


def test_split_batches_gives_each_rank_its_accum_slice_of_every_global_batch():
    batches = [[i] for i in range(11)]
    r0, dropped = split_batches(batches, Dist(rank=0, world=2), accum=2)
    r1, _ = split_batches(batches, Dist(rank=1, world=2), accum=2)
    assert r0 == [[0], [1], [4], [5]] and r1 == [[2], [3], [6], [7]] and dropped == 3
    assert split_batches(batches, Dist(), accum=2) == (batches, 0)


def test_the_process_group_waits_as_long_as_train_dist_timeout_minutes(monkeypatch):
    # On a first multi-GPU run the other ranks wait at a barrier while rank 0 downloads and tokenises:
    # PyTorch's default 10-minute timeout must not apply there.
    import datetime

    import softprompt.distributed as distributed

    seen = {}
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    d, device = distributed.init("cpu", timeout_minutes=90)
    assert d == Dist(rank=1, world=2, local_rank=0) and device == "cpu"
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(minutes=90)}
    from softprompt.config import TrainConfig

    assert TrainConfig().dist_timeout_minutes == 60  # the default: generous, and a config key
