"""Grad mode and anomaly mode are per thread (as PyTorch's), restore themselves, and apply
to a decorated generator while it runs."""
import threading

import numpy as np
import pytest

import minigrad as mg


def _in_thread(fn):
    result, errors = {}, []

    def target():
        try:
            result["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    if errors:
        raise errors[0]
    return result["value"]


def test_no_grad_in_one_thread_leaves_another_thread_recording():
    inside, release = threading.Event(), threading.Event()

    def evaluate():  # holds no_grad open while the main thread trains
        with mg.no_grad():
            inside.set()
            release.wait(timeout=30)
            return mg.is_grad_enabled()

    worker_result = {}
    worker = threading.Thread(target=lambda: worker_result.setdefault("grad", evaluate()))
    worker.start()
    assert inside.wait(timeout=30)
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()  # a training step in the main thread, while the worker is in no_grad
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])
    assert mg.is_grad_enabled()
    release.set()
    worker.join(timeout=30)
    assert worker_result["grad"] is False and mg.is_grad_enabled()


def test_a_new_thread_starts_recording_even_inside_no_grad():
    with mg.no_grad():
        assert _in_thread(mg.is_grad_enabled) is True
        assert not mg.is_grad_enabled()
    with mg.detect_anomaly():
        assert _in_thread(lambda: mg.modes.MODE.get().anomaly) is False


def test_blocks_of_two_threads_exited_out_of_order_leave_both_modes_right():
    a, b = mg.no_grad(), mg.no_grad()
    a.__enter__()
    entered, leave = threading.Event(), threading.Event()

    def other():
        b.__enter__()
        entered.set()
        leave.wait(timeout=30)
        b.__exit__(None, None, None)
        return mg.is_grad_enabled()

    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("after", other()))
    thread.start()
    assert entered.wait(timeout=30)
    a.__exit__(None, None, None)  # the first block ends first
    leave.set()
    thread.join(timeout=30)
    assert mg.is_grad_enabled() and result["after"] is True


def test_no_grad_and_detect_anomaly_may_end_out_of_order_in_one_thread():
    grad, anomaly = mg.no_grad(), mg.detect_anomaly()
    grad.__enter__()
    anomaly.__enter__()
    grad.__exit__(None, None, None)  # restores only grad mode
    assert mg.is_grad_enabled() and mg.modes.MODE.get().anomaly
    anomaly.__exit__(None, None, None)
    assert not mg.modes.MODE.get().anomaly


def test_no_grad_on_a_generator_applies_while_it_runs():
    x = mg.tensor([1.0, 2.0], requires_grad=True)

    @mg.no_grad()
    def squares(n):
        for _ in range(n):
            received = yield x * x, mg.is_grad_enabled()
            if received is not None:
                yield received, mg.is_grad_enabled()

    gen = squares(3)
    y, enabled = next(gen)
    assert not y.requires_grad and enabled is False
    assert mg.is_grad_enabled()  # outside the generator's steps, the caller's mode
    z = x * x
    assert z.requires_grad
    assert gen.send("hello") == ("hello", False)
    assert [e for _, e in gen] == [False, False]


def test_a_decorated_generator_closed_early_or_thrown_into_restores_the_mode():
    @mg.no_grad()
    def forever():
        try:
            while True:
                yield mg.is_grad_enabled()
        except ValueError:
            yield "caught with grad " + str(mg.is_grad_enabled())

    gen = forever()
    assert next(gen) is False
    assert gen.throw(ValueError("x")) == "caught with grad False"
    gen.close()
    assert mg.is_grad_enabled()
    with pytest.raises(StopIteration):
        next(gen)
