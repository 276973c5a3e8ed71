"""Tests for minigrad.optim: each optimizer's trajectory against PyTorch's documented
algorithm (written out again below, independently, in plain NumPy), parameter groups,
state_dict round trips that resume bit for bit, dtypes, errors, and the lr schedules."""
import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
from minigrad import optim
from minigrad.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, StepLR

# A small quadratic f(p) = 0.5 * sum(A * (p - C)^2) with gradient A * (p - C):
# the gradient depends on the iterate, so the whole trajectory is compared.
A = np.array([[1.0, 4.0, 0.5], [2.0, 0.25, 3.0]])
C = np.array([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1]])
P0 = np.array([[1.0, 2.0, -1.0], [0.4, -2.0, 1.5]])


def grad_of(p):
    return A * (p - C)


# ----------------------------------------------------------------------------- the documented algorithms
def ref_sgd(p, steps, lr, momentum=0, dampening=0, nesterov=False, weight_decay=0):
    b = None
    for _ in range(steps):
        g = grad_of(p)
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            b = g if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def ref_adam(p, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, decoupled=False):
    beta1, beta2 = betas
    m = v = v_max = np.zeros_like(p)
    for t in range(1, steps + 1):
        g = grad_of(p)
        if decoupled:
            p = p - lr * weight_decay * p
        elif weight_decay:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            v_hat = v_max / (1 - beta2**t)
        else:
            v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_adamw(p, steps, weight_decay=1e-2, **kw):
    return ref_adam(p, steps, weight_decay=weight_decay, decoupled=True, **kw)


def ref_adagrad(p, steps, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10):
    state_sum = np.full_like(p, initial_accumulator_value)
    for t in range(1, steps + 1):
        g = grad_of(p)
        clr = lr / (1 + (t - 1) * lr_decay)
        if weight_decay:
            g = g + weight_decay * p
        state_sum = state_sum + g * g
        p = p - clr * g / (np.sqrt(state_sum) + eps)
    return p


def ref_rmsprop(p, steps, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False):
    v = g_ave = b = np.zeros_like(p)
    for _ in range(steps):
        g = grad_of(p)
        if weight_decay:
            g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        v_tilde = v
        if centered:
            g_ave = alpha * g_ave + (1 - alpha) * g
            v_tilde = v_tilde - g_ave * g_ave
        if momentum > 0:
            b = momentum * b + g / (np.sqrt(v_tilde) + eps)
            p = p - lr * b
        else:
            p = p - lr * g / (np.sqrt(v_tilde) + eps)
    return p


CASES = [
    (optim.SGD, ref_sgd, dict(lr=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05)),
    (optim.Adam, ref_adam, dict(lr=0.1)),
    (optim.Adam, ref_adam, dict(lr=0.05, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1, amsgrad=True)),
    (optim.AdamW, ref_adamw, dict(lr=0.1)),
    (optim.AdamW, ref_adamw, dict(lr=0.05, betas=(0.5, 0.9), weight_decay=0.3, amsgrad=True)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.3)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.3, lr_decay=0.2, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-3)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, eps=1e-3, weight_decay=0.1, momentum=0.7, centered=True)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, centered=True)),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(CASES)]


def run(opt, params, steps):
    for _ in range(steps):
        for p in params:
            p.grad = mg.Tensor(grad_of(p.data.astype(np.float64)).astype(p.dtype))
        opt.step()


@pytest.mark.parametrize("cls, reference, options", CASES, ids=IDS)
def test_trajectory_matches_documented_algorithm(cls, reference, options):
    p = nn.Parameter(P0)
    run(cls([p], **options), [p], 8)
    expected = reference(P0, 8, **options)
    assert np.abs(expected - P0).max() > 1e-3  # the optimizer went somewhere
    np.testing.assert_allclose(p.data, expected, rtol=0, atol=1e-10)


def test_sgd_momentum_by_hand():
    # f = p^2, p0 = 1: g1 = 2, b1 = 2, p1 = 0.8; g2 = 1.6, b2 = 0.9 * 2 + 1.6 = 3.4, p2 = 0.8 - 0.34
    p = nn.Parameter([1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = mg.Tensor(2 * p.data)
        opt.step()
    assert p.data[0] == pytest.approx(0.46, abs=1e-15)


def test_adam_first_step_moves_by_lr_times_sign():
    # m_hat = g and v_hat = g^2 at t = 1, so the step is lr * g / (|g| + eps): about lr * sign(g)
    p = nn.Parameter([1.0, -2.0, 3.0])
    p.grad = mg.Tensor([0.5, -4.0, 1e-3])
    optim.Adam([p], lr=0.1).step()
    expected = [1 - 0.1 * 0.5 / (0.5 + 1e-8), -2 + 0.1 * 4 / (4 + 1e-8), 3 - 0.1 * 1e-3 / (1e-3 + 1e-8)]
    np.testing.assert_allclose(p.data, expected, rtol=1e-15)


def test_param_groups_have_their_own_options():
    p, q = nn.Parameter(P0), nn.Parameter(P0)
    opt = optim.SGD([{"params": [p]}, {"params": q, "lr": 0.01, "momentum": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert opt.param_groups[0]["momentum"] == 0 and opt.param_groups[1]["nesterov"] is False
    run(opt, [p, q], 5)
    np.testing.assert_allclose(p.data, ref_sgd(P0, 5, lr=0.1), atol=1e-12)
    np.testing.assert_allclose(q.data, ref_sgd(P0, 5, lr=0.01, momentum=0.5), atol=1e-12)
    r = nn.Parameter(P0)
    opt.add_param_group({"params": [r], "lr": 0.2})
    assert opt.param_groups[2]["momentum"] == 0 and opt.param_groups[2]["lr"] == 0.2


def test_parameters_without_grad_are_skipped():
    p, q = nn.Parameter([1.0, 2.0]), nn.Parameter([3.0])
    opt = optim.Adam([p, q], lr=0.1)
    p.grad = mg.Tensor([1.0, 1.0])
    opt.step()
    opt.step()
    assert q.data[0] == 3.0 and q not in opt.state
    assert opt.state[p]["step"] == 2


def test_step_updates_in_place_and_bumps_the_version():
    p = nn.Parameter([1.0, 2.0])
    data, version = p.data, p._changed_at
    p.grad = mg.Tensor([1.0, 1.0])
    optim.SGD([p], lr=0.5).step()
    assert p.data is data and p._changed_at > version
    np.testing.assert_array_equal(p.data, [0.5, 1.5])


def test_zero_grad():
    p = nn.Parameter([1.0, 2.0])
    opt = optim.SGD([p], lr=0.1)
    p.grad = mg.Tensor([3.0, 4.0])
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.data, [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("cls, reference, options", CASES, ids=IDS)
def test_float32_parameters_and_state_stay_float32(cls, reference, options):
    p = nn.Parameter(P0, dtype=np.float32)
    opt = cls([p], **options)
    run(opt, [p], 3)
    assert p.dtype == np.float32
    for name, value in opt.state[p].items():
        assert not isinstance(value, np.ndarray) or value.dtype == np.float32, name
    np.testing.assert_allclose(p.data, reference(P0, 3, **options), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("cls, reference, options", CASES, ids=IDS)
def test_resume_from_state_dict_continues_bit_for_bit(tmp_path, cls, reference, options):
    uninterrupted = [nn.Parameter(P0, dtype=np.float32), nn.Parameter(P0[::-1], dtype=np.float32)]
    run(cls(uninterrupted, **options), uninterrupted, 6)

    first = [nn.Parameter(P0, dtype=np.float32), nn.Parameter(P0[::-1], dtype=np.float32)]
    opt = cls(first, **options)
    run(opt, first, 3)
    mg.save({"params": [p.data for p in first], "optim": opt.state_dict()}, tmp_path / "ckpt")

    saved = mg.load(tmp_path / "ckpt")
    resumed = [nn.Parameter(a) for a in saved["params"]]
    opt = cls(resumed, lr=123.0)  # options come back from the state dict
    opt.load_state_dict(saved["optim"])
    assert opt.param_groups[0]["lr"] == options["lr"]
    run(opt, resumed, 3)
    for p, q in zip(uninterrupted, resumed):
        assert q.dtype == np.float32
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_layout_is_pytorch_like_and_a_copy():
    p, q = nn.Parameter([1.0, 2.0]), nn.Parameter([3.0])
    opt = optim.Adam([{"params": [p]}, {"params": [q], "lr": 0.5}])
    p.grad = mg.Tensor([1.0, -1.0])
    opt.step()
    state = opt.state_dict()
    assert list(state["state"]) == ["0"]  # q has no grad yet, so no state
    assert state["state"]["0"]["step"] == 1
    np.testing.assert_allclose(state["state"]["0"]["exp_avg"], [0.1, -0.1])
    assert state["param_groups"] == [
        {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0]},
        {"lr": 0.5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [1]},
    ]
    opt.step()
    np.testing.assert_allclose(state["state"]["0"]["exp_avg"], [0.1, -0.1])  # not aliased


def adam_after_one_step(shape=(3,)):
    p = nn.Parameter(np.ones(shape))
    opt = optim.Adam([p])
    p.grad = mg.Tensor(np.ones(shape))
    opt.step()
    return opt


def test_load_state_dict_shape_mismatch_names_the_key_and_changes_nothing():
    target = adam_after_one_step()
    before = target.state_dict()
    bad = adam_after_one_step().state_dict()
    bad["param_groups"][0]["lr"] = 0.5
    bad["state"]["0"]["exp_avg"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: state\['0'\]\['exp_avg'\] has shape \(2,\), "
                                         r"its parameter has shape \(3,\)"):
        target.load_state_dict(bad)
    after = target.state_dict()
    assert after["param_groups"] == before["param_groups"]
    np.testing.assert_array_equal(after["state"]["0"]["exp_avg"], before["state"]["0"]["exp_avg"])


def test_load_state_dict_structural_errors():
    target = adam_after_one_step()
    state = adam_after_one_step().state_dict()
    with pytest.raises(ValueError, match="the state dict has 2 parameter groups, the optimizer 1"):
        target.load_state_dict({"state": {}, "param_groups": state["param_groups"] * 2})
    two = {**state["param_groups"][0], "params": [0, 1]}
    with pytest.raises(ValueError, match="parameter group 0 has 2 parameters in the state dict, 1 in the optimizer"):
        target.load_state_dict({"state": {}, "param_groups": [two]})
    with pytest.raises(ValueError, match="state for parameter 5"):
        target.load_state_dict({"state": {"5": state["state"]["0"]}, "param_groups": state["param_groups"]})
    sgd = optim.SGD([nn.Parameter(np.ones(3))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"state\['0'\] has entries \['exp_avg', 'exp_avg_sq', 'step'\], SGD"):
        sgd.load_state_dict({"state": state["state"], "param_groups": [{**state["param_groups"][0], "momentum": 0.9,
                                                                          "dampening": 0, "nesterov": False}]})
    with pytest.raises(ValueError, match="expected a dict with 'state' and 'param_groups'"):
        target.load_state_dict({"state": {}})


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["state"]["0"].update(step=-3), r"state\['0'\]\['step'\] is -3; expected a whole number from 0"),
    (lambda s: s["state"]["0"].update(step=10**400), r"state\['0'\]\['step'\] is 1000.*; expected a whole number"),
    (lambda s: s["state"]["0"].update(step=2.5), r"state\['0'\]\['step'\] is 2.5; expected a whole number"),
    (lambda s: s["state"]["0"].update(step=True), r"state\['0'\]\['step'\] is True; expected a whole number"),
    (lambda s: s["state"]["0"]["exp_avg_sq"].__setitem__(0, np.nan), r"state\['0'\]\['exp_avg_sq'\] holds NaN or Inf"),
    (lambda s: s["param_groups"][0].update(params=[1, 0]), r"parameter group 0 lists parameters \[1, 0\]; "
                                                            r"state_dict\(\) numbers them \[0, 1\] in order"),
])
def test_load_state_dict_trusts_no_field_of_the_state(damage, message):
    # a tampered checkpoint: a math domain error, an OverflowError, or moments swapped between two
    # tensors of one shape (a permuted params list) before
    params = [nn.Parameter(np.ones(3)), nn.Parameter(np.full(3, 2.0))]
    opt = optim.Adam(params)
    for p in params:
        p.grad = mg.Tensor(np.arange(3.0) + p.data)
    opt.step()
    state = opt.state_dict()
    damage(state)
    with pytest.raises(ValueError, match="Adam.load_state_dict: " + message):
        optim.Adam([nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))]).load_state_dict(state)


def test_load_state_dict_accepts_int_keys():
    target = adam_after_one_step()
    state = adam_after_one_step().state_dict()
    state["state"] = {0: state["state"]["0"]}
    target.load_state_dict(state)
    assert next(iter(target.state.values()))["step"] == 1


# ----------------------------------------------------------------------------- bad input
def test_constructor_errors():
    p = nn.Parameter([1.0])
    with pytest.raises(ValueError, match="Adam: invalid lr -1"):
        optim.Adam([p], lr=-1)
    with pytest.raises(ValueError, match=r"Adam: invalid betas \(1.0, 0.9\)"):
        optim.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="RMSprop: invalid alpha"):
        optim.RMSprop([p], alpha=-0.5)
    with pytest.raises(ValueError, match="SGD: invalid nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(TypeError, match="SGD: params must be an iterable"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)


# ----------------------------------------------------------------------------- schedules
def sgd(*lrs):
    return optim.SGD([{"params": [nn.Parameter([0.0])], "lr": lr} for lr in lrs], lr=lrs[0])


def lrs_over(scheduler, epochs):
    out = [scheduler.get_last_lr()]
    for _ in range(epochs):
        scheduler.optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr())
        assert out[-1] == [g["lr"] for g in scheduler.optimizer.param_groups]
    return np.array(out)


def test_step_lr():
    got = lrs_over(StepLR(sgd(1.0, 0.2), step_size=3, gamma=0.5), 7)
    np.testing.assert_allclose(got[:, 0], [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25], rtol=1e-15)
    np.testing.assert_allclose(got[:, 1], 0.2 * got[:, 0], rtol=1e-15)


def test_exponential_lr():
    got = lrs_over(ExponentialLR(sgd(0.5), gamma=0.9), 5)
    np.testing.assert_allclose(got[:, 0], [0.5, 0.45, 0.405, 0.3645, 0.32805, 0.295245], rtol=1e-14)


def test_cosine_annealing_lr():
    got = lrs_over(CosineAnnealingLR(sgd(1.1), T_max=4, eta_min=0.1), 6)
    half = (1 + math.cos(math.pi / 4)) / 2
    np.testing.assert_allclose(got[:, 0], [1.1, 0.1 + half, 0.6, 0.1 + (1 - half), 0.1, 0.1 + (1 - half), 0.6],
                               rtol=1e-14)


def test_scheduler_state_dict_round_trip(tmp_path):
    opt = sgd(1.0)
    sched = CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    lrs_over(sched, 3)
    mg.save({"optim": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s")
    saved = mg.load(tmp_path / "s")
    opt2 = sgd(1.0)
    sched2 = CosineAnnealingLR(opt2, T_max=2)
    opt2.load_state_dict(saved["optim"])
    sched2.load_state_dict(saved["sched"])
    assert (sched2.T_max, sched2.eta_min, sched2.last_epoch) == (10, 0.01, 3)
    np.testing.assert_array_equal(lrs_over(sched2, 4), lrs_over(sched, 4))
    with pytest.raises(ValueError, match=r"missing keys \['gamma', 'step_size'\], unexpected keys \['T_max', 'eta_min'\]"):
        StepLR(sgd(1.0), 2).load_state_dict(saved["sched"])


def test_scheduler_errors():
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive integer; got 0"):
        StepLR(sgd(1.0), step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        CosineAnnealingLR(sgd(1.0), T_max=1.5)
    with pytest.raises(TypeError, match="ExponentialLR: expected a minigrad.optim Optimizer"):
        ExponentialLR([1.0], gamma=0.5)
