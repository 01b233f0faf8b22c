"""Pure pieces of training: the lr schedule and the checkpointable, rank-sharded clip stream."""

import math

import torch

from genie_gym.config import OptimConfig
from genie_gym.training.sampler import ClipIndexStream
from genie_gym.training.schedule import WarmupCosine, lr_at


def test_schedule_warmup_then_cosine_to_min_lr():
    o = OptimConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert math.isclose(lr_at(0, o), 0.1) and math.isclose(lr_at(9, o), 1.0)
    assert lr_at(5, o) < lr_at(9, o)
    assert math.isclose(lr_at(55, o), 0.55, abs_tol=1e-9)  # halfway through the decay
    assert math.isclose(lr_at(100, o), 0.1) and math.isclose(lr_at(10_000, o), 0.1)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = WarmupCosine(opt, o, 100)
    for _ in range(30):
        sched.step()
    other = WarmupCosine(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), o, 100)
    other.load_state_dict(sched.state_dict())
    assert other.optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == lr_at(30, o)


def test_stream_resume_continues_exactly_across_epochs():
    a = ClipIndexStream(num_items=10, batch_size=4, seed=3)
    full = [a.next_batch() for _ in range(8)]  # crosses three epoch boundaries
    b = ClipIndexStream(num_items=10, batch_size=4, seed=3)
    head = [b.next_batch() for _ in range(3)]
    c = ClipIndexStream(num_items=10, batch_size=4, seed=3)
    c.load_state_dict(b.state_dict())
    assert head + [c.next_batch() for _ in range(5)] == full
    flat = sum(full, [])
    assert sorted(flat[:10]) == list(range(10))  # each epoch is a permutation
    assert flat[:10] != flat[10:20]  # and epochs differ


def test_stream_ranks_are_disjoint_and_cover_the_epoch():
    shards = [ClipIndexStream(num_items=11, batch_size=3, seed=0, rank=r, world_size=2) for r in range(2)]
    epoch = [s.next_batch() + s.next_batch() for s in shards]  # 6 per rank = the padded epoch of 12
    assert set(epoch[0]) | set(epoch[1]) == set(range(11))
    assert len(set(epoch[0]) & set(epoch[1])) <= 1  # only the padding index may repeat
