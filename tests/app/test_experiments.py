"""The adding and copy-memory tasks, `minigrad-rnn experiment` and `minigrad-rnn gradflow`."""
import csv
import json
import math
import os

import numpy as np
import pytest

import minigrad as mg
from minigrad_rnn.app import experiments
from minigrad_rnn.app.cli import main


def test_adding_problem_batches():
    task = experiments.AddingProblem(10)
    x, y = task.batch(np.random.default_rng(0), 500)
    assert x.shape == (10, 500, 2) and y.shape == (500, 1) and x.dtype == np.float32
    values, markers = x[..., 0], x[..., 1]
    assert np.all(markers[:5].sum(axis=0) == 1) and np.all(markers[5:].sum(axis=0) == 1)  # one per half
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=0), rtol=1e-6)
    assert 0 <= values.min() and values.max() < 1
    # always answering 1 scores about 1/6, the baseline
    assert task.baseline == pytest.approx(1 / 6)
    assert np.mean((y - 1) ** 2) == pytest.approx(1 / 6, abs=0.03)


def test_copy_memory_batches():
    task = experiments.CopyMemory(5)
    x, y = task.batch(np.random.default_rng(0), 3)
    assert x.shape == (25, 3, 10) and y.shape == (25, 3)
    ids = x.argmax(axis=-1)
    np.testing.assert_array_equal(x.sum(axis=-1), 1)  # one-hot
    assert np.all((1 <= ids[:10]) & (ids[:10] <= 8))
    assert np.all(ids[10:14] == 0) and np.all(ids[14] == 9) and np.all(ids[15:] == 0)  # T-1 blanks, delimiter
    assert np.all(y[:15] == 0)
    np.testing.assert_array_equal(y[15:], ids[:10])
    assert task.baseline == pytest.approx(10 * math.log(8) / 25)


def test_copy_baseline_is_the_loss_of_the_memoryless_strategy():
    # blanks with certainty where they are sure, uniform over the 8 symbols at the last 10 steps
    task = experiments.CopyMemory(30)
    _, y = task.batch(np.random.default_rng(1), 4)
    logits = np.full(y.shape + (10,), -np.inf)
    logits[:-10, :, 0] = 0
    logits[-10:, :, 1:9] = 0
    import minigrad as mg
    loss = task.loss(mg.Tensor(np.where(np.isinf(logits), -1e9, logits)), y)
    assert loss.item() == pytest.approx(task.baseline, rel=1e-6)


@pytest.mark.parametrize("task, cell", [("adding", "lstm"), ("copy", "gru"), ("adding", "rnn")])
def test_experiment_command(capsys, tmp_path, task, cell):
    out = tmp_path / "exp"
    code = main(["experiment", task, "--cell", cell, "--seq-len", "6", "--hidden-size", "8", "--batch-size", "16",
                 "--steps", "20", "--eval-every", "10", "--test-size", "64", "--lr", "0.01", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    rows = list(csv.DictReader((out / "metrics.csv").open(newline="")))
    assert [int(r["step"]) for r in rows] == [0, 10, 20]
    baseline = experiments.TASKS[task](6).baseline
    assert all(float(r["baseline"]) == pytest.approx(baseline, rel=1e-5) for r in rows)
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 20 and results["test_loss"] == pytest.approx(float(rows[-1]["test_loss"]), rel=1e-5)
    assert results["test_loss"] < float(rows[0]["test_loss"])  # it learns something
    assert f"test {experiments.TASKS[task].metric} {results['test_loss']:.4f}" in stdout
    assert (out / "config.json").exists()


def test_lstm_solves_a_short_adding_problem():
    run = experiments.TaskRun({"task": "adding", "cell": "lstm", "seq_len": 10, "hidden_size": 16,
                               "batch_size": 32, "lr": 0.01, "optimizer": "adam", "clip": 1.0, "seed": 0,
                               "test_size": 200, "dtype": "float32"})
    while run.step < 300:
        run.train_step()
    assert run.test_loss() < 0.05  # well below the 0.167 of guessing


def test_gradient_norms_are_those_of_the_hidden_states():
    # a linear read-out of the last state only: dL/dh_T is exactly W^T dL/dy
    run = experiments.TaskRun({"task": "adding", "cell": "rnn", "seq_len": 5, "hidden_size": 4, "batch_size": 2,
                               "lr": 0.01, "optimizer": "adam", "clip": 0.0, "seed": 0, "test_size": 1,
                               "dtype": "float64"})
    x, y = run.task.batch(np.random.default_rng(0), 3, np.float64)
    norms = experiments.hidden_state_gradients(run.model, run.task, x, y)["h"]
    assert norms.shape == (6,)
    out = run.model(x)
    residual = 2 * (out.data[-1] - y) / y.size  # dMSE/dy
    expected = np.linalg.norm(residual @ run.model.head.weight.data)
    assert norms[-1] == pytest.approx(expected, rel=1e-10)
    assert np.all(norms[:-1] > 0)


def test_gradflow_command(capsys, tmp_path):
    out = tmp_path / "gf"
    code = main(["gradflow", "--seq-len", "30", "--hidden-size", "8", "--steps", "3", "--cells", "rnn,lstm",
                 "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    rows = list(csv.DictReader((out / "gradflow.csv").open(newline="")))
    assert len(rows) == (2 + 2 * 2) * 31  # (initialization, trained) x (T + 1), the LSTM's for h and c
    norms = {(r["cell"], r["phase"], r["state"]): [] for r in rows}
    for r in rows:
        norms[r["cell"], r["phase"], r["state"]].append(float(r["grad_norm"]))
    rnn = norms["rnn", "initialization", "h"]
    assert rnn[0] < 1e-3 * rnn[-1]  # the tanh RNN's gradient vanishes over 30 steps
    assert ("lstm", "trained", "c") in norms and ("rnn", "trained", "c") not in norms
    assert "|dL/dh_0| / |dL/dh_T|" in stdout and "|dL/dc_0| / |dL/dc_T|" in stdout
    assert "RNN trained 3 steps" in stdout and "not solved within 3 steps" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["lstm"]["training"]["steps"] == 3 and not results["lstm"]["training"]["solved"]
    assert results["rnn"]["ratios"]["h initialization"] == pytest.approx(rnn[0] / rnn[-1], rel=1e-4)
    assert "gradflow.png" not in stdout or (out / "gradflow.png").exists()


def test_experiment_bad_options(capsys, tmp_path):
    assert main(["experiment", "adding", "--seq-len", "0"]) == 2
    assert "argument --seq-len: expected a positive integer" in capsys.readouterr().err
    assert main(["experiment", "sort"]) == 2
    assert "invalid choice: 'sort'" in capsys.readouterr().err
    assert main(["gradflow", "--cells", "rnn,cnn"]) == 2
    assert "argument --cells" in capsys.readouterr().err


def test_forget_bias_sets_only_the_lstm_forget_gates():
    model = experiments.SequenceModel("lstm", 2, 3, 1, rng=np.random.default_rng(0), forget_bias=1.0)
    b = model.rnn.bias_ih_l0.data + model.rnn.bias_hh_l0.data
    np.testing.assert_allclose(b[3:6], 1.0)
    assert np.all(np.abs(b[:3]) < 2 / np.sqrt(3)) and np.all(b[:3] != 1.0)  # other gates keep PyTorch's init
    rnn = experiments.SequenceModel("rnn", 2, 3, 1, rng=np.random.default_rng(0), forget_bias=1.0)
    assert np.all(np.abs(rnn.rnn.bias_ih_l0.data) <= 1 / np.sqrt(3))


def test_translate_command_writes_curves_alignments_and_results(capsys, tmp_path):
    out = tmp_path / "tr"
    code = main(["experiment", "translate", "--max-len", "4", "--steps", "20", "--eval-every", "10",
                 "--hidden-size", "8", "--attention", "additive,none", "--beam-width", "2", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"additive", "none"}
    for result in results.values():
        assert result["steps"] == 20 and set(result["by_length"]) == {"1", "2", "3", "4"}
        assert result["exact_match"] == pytest.approx(np.mean(list(result["by_length"].values())))
    rows = list(csv.DictReader((out / "metrics.csv").open(newline="")))
    assert [(r["attention"], r["step"]) for r in rows] == [("additive", "10"), ("additive", "20"),
                                                            ("none", "10"), ("none", "20")]
    assert "additive:" in stdout and "exact match after 20 steps" in stdout
    assert (out / "alignment-additive.png").exists() and not (out / "alignment-none.png").exists()
    assert (out / "accuracy.png").exists()


@pytest.mark.parametrize("args, message, status", [
    (["--max-len", "500"], "--max-len must be in [1, 200]; got 500", 1),
    (["--cell", "gru"], "unrecognized arguments: --cell gru", 2),  # each task takes only its own options
])
def test_translate_bad_options_are_one_line(capsys, tmp_path, args, message, status):
    assert main(["experiment", "translate", *args, "--out", str(tmp_path / "x")]) == status
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_translate_only_options_are_refused_elsewhere(capsys):
    assert main(["experiment", "adding", "--beam-width", "3"]) == 2
    assert "unrecognized arguments: --beam-width 3" in capsys.readouterr().err
    assert main(["experiment", "translate", "--beam-width", "0"]) == 2
    assert "argument --beam-width" in capsys.readouterr().err
    assert main(["experiment", "translate", "--attention", "additive,cosine"]) == 2
    assert "expected a comma-separated list of additive, general, none" in capsys.readouterr().err


def test_translate_with_short_strings_prints_no_bucket_past_them(capsys, tmp_path):
    # --max-len 1 printed a "lengths 1-10" bucket
    assert main(["experiment", "translate", "--max-len", "1", "--steps", "2", "--eval-every", "2", "--attention", "none",
                 "--out", str(tmp_path / "t")]) == 0
    stdout = capsys.readouterr().out
    assert "exact match after 2 steps" in stdout and "lengths" not in stdout


def test_an_experiment_resumes_bit_for_bit(tmp_path, capsys):
    tiny = ["experiment", "adding", "--hidden-size", "4", "--test-size", "10", "--seq-len", "10", "--eval-every", "3"]
    assert main([*tiny, "--steps", "6", "--out", str(tmp_path / "straight")]) == 0
    assert main([*tiny, "--steps", "3", "--out", str(tmp_path / "split")]) == 0
    assert main(["experiment", "adding", "--resume", str(tmp_path / "split"), "--steps", "6"]) == 0, \
        capsys.readouterr().err
    straight, split = (mg.load(tmp_path / run / "checkpoint.safetensors") for run in ("straight", "split"))
    assert straight["step"] == split["step"] == 6
    for name, weight in straight["model"].items():
        np.testing.assert_array_equal(weight, split["model"][name])
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines() for run in ("straight", "split")]
    assert [r.split(",")[:4] for r in rows[0]] == [r.split(",")[:4] for r in rows[1]]  # all but the seconds
    for run in ("straight", "split"):
        assert {"config.json", "metrics.csv", "checkpoint.safetensors", "results.json"} <= set(
            os.listdir(tmp_path / run))
    assert main(["experiment", "copy", "--resume", str(tmp_path / "split")]) == 1
    assert "is of the adding task, not of copy" in capsys.readouterr().err
    assert main(["experiment", "adding", "--resume", str(tmp_path / "split"), "--hidden-size", "8"]) == 1
    assert "--hidden-size cannot change when resuming" in capsys.readouterr().err


@pytest.mark.parametrize("stop_at, under_way, finished", [(3, ("additive", 3), set()), (6, ("none", 2), {"additive"})])
def test_translate_resumes_the_model_under_way_then_the_rest(tmp_path, capsys, stop_at, under_way, finished):
    tiny = ["experiment", "translate", "--max-len", "3", "--hidden-size", "8", "--embedding-size", "4",
            "--batch-size", "8", "--eval-every", "2", "--attention", "additive,none"]
    assert main([*tiny, "--steps", "4", "--out", str(tmp_path / "straight")]) == 0
    from minigrad_rnn.app.translate import TranslateRun

    original = TranslateRun.train_step
    calls = {"n": 0}

    def ctrl_c_at_the_third(self):  # the third step of the first model, or the second of the next: stop after it
        calls["n"] += 1
        if calls["n"] == stop_at:
            import signal
            signal.raise_signal(signal.SIGINT)
        return original(self)

    TranslateRun.train_step = ctrl_c_at_the_third
    try:
        assert main([*tiny, "--steps", "4", "--out", str(tmp_path / "split")]) == 130
    finally:
        TranslateRun.train_step = original
    saved = mg.load(tmp_path / "split" / "checkpoint.safetensors")
    assert (saved["current"], saved["step"]) == under_way and set(saved["results"]) == finished
    assert main(["experiment", "translate", "--resume", str(tmp_path / "split")]) == 0, capsys.readouterr().err
    straight, split = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("straight", "split"))
    assert straight.keys() == split.keys() == {"additive", "none"}
    for kind in straight:
        assert straight[kind]["by_length"] == split[kind]["by_length"] and split[kind]["steps"] == 4
    # the same exact match at every step both reported (the split run also reported where it stopped)
    accuracy = [{(r["attention"], r["step"]): r["accuracy"]
                 for r in csv.DictReader((tmp_path / run / "metrics.csv").read_text().splitlines())}
                for run in ("straight", "split")]
    assert set(accuracy[0]) <= set(accuracy[1]) and all(accuracy[1][k] == v for k, v in accuracy[0].items())
    assert {"config.json", "metrics.csv", "checkpoint.safetensors", "results.json", "loss.png"} <= set(
        os.listdir(tmp_path / "split"))


def test_gradflow_resumes_the_cell_under_way_then_the_rest(tmp_path, capsys):
    tiny = ["gradflow", "--seq-len", "6", "--hidden-size", "4", "--cells", "rnn,gru", "--steps", "4"]
    assert main([*tiny, "--out", str(tmp_path / "straight")]) == 0
    from minigrad_rnn.app.experiments import TaskRun

    original = TaskRun.train_step
    calls = {"n": 0}

    def ctrl_c_at_the_second(self):  # the rnn's second step: stop after it
        calls["n"] += 1
        if calls["n"] == 2:
            import signal
            signal.raise_signal(signal.SIGINT)
        return original(self)

    TaskRun.train_step = ctrl_c_at_the_second
    try:
        assert main([*tiny, "--out", str(tmp_path / "split")]) == 130
    finally:
        TaskRun.train_step = original
    saved = mg.load(tmp_path / "split" / "checkpoint.safetensors")
    assert (saved["current"], saved["step"], saved["flows"]) == ("rnn", 2, {})
    assert main(["gradflow", "--resume", str(tmp_path / "split")]) == 0, capsys.readouterr().err
    straight, split = ((tmp_path / run / "gradflow.csv").read_text() for run in ("straight", "split"))
    assert straight == split  # the same norms, before and after training, for both cells
    assert {"config.json", "metrics.csv", "checkpoint.safetensors", "results.json", "loss.png", "gradflow.png"} <= set(
        os.listdir(tmp_path / "split"))
