"""End to end: a small MLP learns sin (ops, tape, modules, optimizer together), and a run
resumed from a checkpoint of model + optimizer + schedule + RNG state is bit for bit the
uninterrupted run."""
import numpy as np

import minigrad as mg
import minigrad.nn as nn
from minigrad import optim
from minigrad.nn.utils import clip_grad_norm_


def test_mlp_learns_sin_on_held_out_grid():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(1, 32, rng=rng), nn.Tanh(), nn.Linear(32, 1, rng=rng))
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = rng.uniform(-np.pi, np.pi, (256, 1)).astype(np.float32)
    inputs, targets = mg.Tensor(x), mg.Tensor(np.sin(x))
    grid = np.linspace(-np.pi, np.pi, 1001, dtype=np.float32)[:, None]  # held out: not the training points

    def held_out_mse():
        with mg.no_grad():
            return float(np.mean((model(mg.Tensor(grid)).data - np.sin(grid)) ** 2))

    before = held_out_mse()
    for _ in range(1500):
        loss = nn.functional.mse_loss(model(inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.05  # the untrained net is far off (the best straight line has MSE ~0.1)
    assert held_out_mse() < 1e-4  # measured ~9e-6 (seeds 0-2: 4e-6 .. 9e-6)
    assert all(p.dtype == np.float32 for p in model.parameters())


def make_run(init_seed, rng):
    """A tiny MLP with dropout drawing from ``rng``, Adam with weight decay, and a step schedule."""
    init = np.random.default_rng(init_seed)
    model = nn.Sequential(nn.Linear(2, 16, rng=init), nn.Tanh(), nn.Dropout(0.3, rng=rng), nn.Linear(16, 1, rng=init))
    opt = optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-3, amsgrad=True)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def train(model, opt, sched, rng, steps):
    """Steps on mini-batches sampled from ``rng`` (which dropout shares); returns the losses."""
    losses = []
    for _ in range(steps):
        x = rng.standard_normal((8, 2)).astype(np.float32)
        y = np.sin(x[:, :1]) * np.cos(x[:, 1:])
        loss = nn.functional.mse_loss(model(mg.Tensor(x)), mg.Tensor(y))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def test_resume_from_checkpoint_is_bit_for_bit(tmp_path):
    rng = np.random.default_rng(42)
    model, opt, sched = make_run(0, rng)
    uninterrupted = train(model, opt, sched, rng, 7)

    rng = np.random.default_rng(42)
    interrupted, opt, sched = make_run(0, rng)
    first = train(interrupted, opt, sched, rng, 4)
    checkpoint = {"model": interrupted.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                  "rng": rng.bit_generator.state}
    mg.save(checkpoint, tmp_path / "run.ckpt")

    rng = np.random.default_rng(7)  # another seed and init: everything must come from the file
    resumed, opt, sched = make_run(1, rng)
    saved = mg.load(tmp_path / "run.ckpt")
    resumed.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optim"])
    sched.load_state_dict(saved["sched"])
    rng.bit_generator.state = saved["rng"]
    rest = train(resumed, opt, sched, rng, 3)

    assert first + rest == uninterrupted  # exact float equality, step by step
    assert len(set(uninterrupted)) == 7  # the losses do change
    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        np.testing.assert_array_equal(q.data, p.data, err_msg=name)
