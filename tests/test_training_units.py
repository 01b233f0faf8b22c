"""Pure pieces of training: the lr schedule and the checkpointable, rank-sharded clip stream."""

import math

import torch

from genie_gym.config import OptimConfig
from genie_gym.training.sampler import ClipIndexStream
from genie_gym.training.schedule import decay_groups, load_optimizer_state, lr_at, make_optimizer, make_scheduler


def test_schedule_warmup_then_cosine_to_min_lr():
    o = OptimConfig(steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert math.isclose(lr_at(0, o), 0.1) and math.isclose(lr_at(9, o), 1.0)
    assert lr_at(5, o) < lr_at(9, o)
    assert math.isclose(lr_at(55, o), 0.55, abs_tol=1e-9)  # halfway through the decay
    assert math.isclose(lr_at(100, o), 0.1) and math.isclose(lr_at(10_000, o), 0.1)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    sched = make_scheduler(opt, o, 100)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(30):
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == [lr_at(s, o) for s in range(31)]
    other = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    make_scheduler(other, o, 100, start_step=30)  # a resumed run rebuilds the schedule from its step
    assert other.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == lr_at(30, o)
    make_scheduler(other, o, 200, start_step=30)  # a longer --steps stretches the decay
    assert other.param_groups[0]["lr"] == lr_at(30, o, 200) > lr_at(30, o)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = torch.nn.Parameter(torch.zeros(4, 8))  # a positional table: 2-D, not decayed
        self.embed = torch.nn.Embedding(5, 8)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.norm = torch.nn.LayerNorm(8)
        self.fc = torch.nn.Linear(8, 8)
        self.frozen = torch.nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def test_weight_decay_only_on_linear_and_conv_weights():
    net = _Net()
    decay, no_decay = decay_groups(net)
    assert decay == [net.conv.weight, net.fc.weight]
    assert no_decay == [net.pos, net.embed.weight, net.conv.bias, net.norm.weight, net.norm.bias, net.fc.bias]
    opt = make_optimizer(net, OptimConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_optimizer_state_from_the_legacy_groups_lands_on_the_same_parameters():
    """Checkpoints up to v1.0 grouped by ndim (>= 2 decayed): their AdamW moments still resume, per parameter."""
    net = _Net()
    params = [p for p in net.parameters() if p.requires_grad]
    legacy = [p for p in params if p.dim() >= 2] + [p for p in params if p.dim() < 2]
    old = torch.optim.AdamW([{"params": legacy[:4], "weight_decay": 0.1}, {"params": legacy[4:], "weight_decay": 0}])
    for p in params:
        p.grad = torch.randn_like(p)
    old.step()
    opt = make_optimizer(net, OptimConfig())
    load_optimizer_state(opt, old.state_dict(), net)
    for p in params:
        assert torch.equal(opt.state[p]["exp_avg"], old.state[p]["exp_avg"])
    assert [g["weight_decay"] for g in opt.param_groups] == [OptimConfig().weight_decay, 0.0]
    same = make_optimizer(net, OptimConfig())
    load_optimizer_state(same, opt.state_dict(), net)  # the current layout loads as is
    assert torch.equal(same.state[net.pos]["exp_avg"], old.state[net.pos]["exp_avg"])


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
