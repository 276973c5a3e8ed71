"""What every minigrad-rnn run shares (minigrad_rnn/app/runs.py): the training loop's divergence checks,
strict JSON, an atomic and checked metrics.csv, and a lock against two runs on one folder."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import minigrad as mg
from minigrad_rnn.app.cli import main
from minigrad_rnn.app.errors import CommandError
from minigrad_rnn.app.runs import Budget, MetricsFile, TrainingLoop, write_json


def test_weights_that_diverge_end_the_run_before_any_report_saves_them():
    w = mg.nn.Parameter(np.ones(3))
    reports = []

    def step():  # a finite loss, but the update leaves an Inf in the weights
        w.data = np.array([1.0, np.inf, 1.0]) if len(reports) == 1 else w.data
        return 0.5

    loop = TrainingLoop(Budget(10, None), 2, "test", parameters=[w])
    with pytest.raises(CommandError, match=r"the weights diverged to NaN or Inf at step 4; .*last checkpoint is intact"):
        loop.run(step, lambda final: reports.append(loop.step))
    assert reports == [2]  # the report (and its checkpoint) at step 4 never happened


def test_until_ends_the_run_after_the_report_that_satisfies_it():
    reports = []
    loop = TrainingLoop(Budget(100, None), 3, "test")
    assert loop.run(lambda: 1.0, lambda final: reports.append((loop.step, final)), until=lambda: loop.step >= 7) is False
    assert reports == [(3, False), (6, False), (9, False)] and loop.step == 9  # no final report: 9 was reported
    assert str(Budget(20, 2.0)) == "20 steps or 2 minutes" and str(Budget(None, 0.5)) == "0.5 minutes"


def test_a_non_finite_loss_ends_the_run_at_its_step():
    losses = iter([1.0, 0.5, float("nan")])
    loop = TrainingLoop(Budget(10, None), 100, "test")
    with pytest.raises(CommandError, match="the loss diverged to nan at step 3"):
        loop.run(lambda: next(losses), lambda final: None)


@pytest.mark.parametrize("command", [
    ["train", "--steps", "5", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--sample-every", "0"],
    ["experiment", "adding", "--steps", "5", "--hidden-size", "4", "--test-size", "10"],
])
def test_a_diverging_run_ends_in_one_line_without_numpy_warnings(command, tmp_path, capfd):
    with warnings.catch_warnings(record=True) as caught:  # what would print to stderr outside pytest
        warnings.simplefilter("always")
        assert main([*command, "--lr", "1e30", "--out", str(tmp_path / "run")]) == 1
    assert [str(w.message) for w in caught] == []
    err = capfd.readouterr().err
    assert err.startswith("minigrad-rnn: error: the loss diverged to ") and err.count("\n") == 1, err


def test_json_written_by_the_command_has_no_bare_nan(tmp_path):
    write_json(tmp_path / "r.json", {"loss": float("nan"), "curve": [1.0, float("inf")], "step": 3})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "curve": [1.0, None], "step": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_metrics_are_rewritten_whole_on_resume_and_a_damaged_file_is_one_error(tmp_path):
    path = tmp_path / "metrics.csv"
    metrics = MetricsFile(path, ["step", "loss"])
    for step in (1, 2, 3):
        metrics.append(step=step, loss=0.5 / step)
    resumed = MetricsFile(path, ["step", "loss"], keep_until_step=2)
    assert [r["step"] for r in resumed.read()] == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    path.write_text("step,loss\n1,0.5\nBROKEN\x00,\n")
    with pytest.raises(CommandError, match=r"metrics.csv is damaged .*move it away"):
        MetricsFile(path, ["step", "loss"], keep_until_step=2)


def test_a_second_run_on_the_same_folder_refuses(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        f = open({str(out / '.lock')!r}, "a")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["experiment", "adding", "--steps", "1", "--hidden-size", "4", "--test-size", "10",
                     "--out", str(out)])
        assert code == 1
        assert capsys.readouterr().err == (f"minigrad-rnn: error: another minigrad-rnn run is writing to {out}; "
                                           "wait for it or choose another --out\n")
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module")
def charlm_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("charlm") / "run"
    assert main(["train", "--steps", "2", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8",
                 "--sample-every", "0", "--out", str(out)]) == 0
    return mg.load(out / "checkpoint.safetensors")


@pytest.mark.parametrize("damage, message", [
    (lambda c: c["config"].update(hidden_size=10 ** 7),
     "config field 'hidden_size' is 10000000; expected an integer >= 1 and <= 1048576"),
    (lambda c: c["config"].update(num_layers=True), "config field 'num_layers' is True; expected an integer >= 1"),
    (lambda c: c["config"].update(dropout="0.5"), "config field 'dropout' is '0.5'; expected a probability"),
    (lambda c: c["config"].update(cell="transformer"), "config field 'cell' is 'transformer'; expected one of gru"),
    (lambda c: c["config"].update(lr=float("nan")), "config field 'lr' is nan; expected a positive number"),
    (lambda c: c["config"].pop("seq_len"), "its config lacks 'seq_len'"),
    (lambda c: c.update(config=[1, 2]), "its config is a list, not a table"),
    (lambda c: c["model"].update({"embed.weight": "ab"}), "weight 'embed.weight' is str; expected an array of float32"),
    (lambda c: c["model"].update({"embed.weight": np.arange(4)}),
     "weight 'embed.weight' is int64; expected an array of float32"),
    (lambda c: c["model"].update({"embed.weight": np.ones((3, 4), bool)}),
     "weight 'embed.weight' is bool; expected an array of float32"),
    (lambda c: c["model"].update({"embed.weight": np.full((3, 4), np.nan, np.float32)}),
     "weight 'embed.weight' holds NaN or Inf"),
    (lambda c: c.update(step=-1), "its step is -1; expected an integer >= 0"),
    (lambda c: c.update(elapsed=-5.0), "its elapsed time is -5.0; expected a number >= 0"),
    (lambda c: c.update(best={"step": 1}), "its best is {'step': 1}; expected {'step': ..., 'val_loss': ...}"),
    (lambda c: c.update(best={"step": 1, "val_loss": float("inf")}),
     "its best validation loss is inf; expected a positive number"),
    (lambda c: c.update(best={"step": 99, "val_loss": 2.0}), "its best step 99 is after its step 2"),
])
def test_no_field_of_a_checkpoint_is_trusted(charlm_checkpoint, damage, message, tmp_path, capsys):
    import copy
    checkpoint = copy.deepcopy(charlm_checkpoint)
    damage(checkpoint)
    mg.save(checkpoint, tmp_path / "checkpoint.safetensors")
    capsys.readouterr()
    for args in (["sample", "--checkpoint", str(tmp_path), "--length", "5"], ["train", "--resume", str(tmp_path)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("minigrad-rnn: error: ") and err.count("\n") == 1, err
        assert f"{tmp_path / 'checkpoint.safetensors'} is damaged: {message}" in err, err


@pytest.mark.parametrize("damage, message", [
    (lambda o: o["state"]["0"].update(step=-3), r"state\['0'\]\['step'\] is -3; expected a whole number"),
    (lambda o: o["state"]["0"].update(step=10**400), r"state\['0'\]\['step'\] is 1000*; expected a whole number"),
    (lambda o: o["state"]["0"].update(step=2.5), r"state\['0'\]\['step'\] is 2.5; expected a whole number"),
    (lambda o: o["param_groups"][0]["params"].reverse(), r"parameter group 0 lists parameters \[.*\]; state_dict"),
])
def test_a_tampered_optimizer_state_is_one_damaged_line_on_resume(charlm_checkpoint, damage, message, tmp_path,
                                                                   capsys):
    # a math domain error or an OverflowError from Adam before; a permuted params list was accepted
    import copy
    checkpoint = copy.deepcopy(charlm_checkpoint)
    damage(checkpoint["optimizer"])
    mg.save(checkpoint, tmp_path / "checkpoint.safetensors")
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("minigrad-rnn: error: ") and err.count("\n") == 1, err
    assert re.search("is damaged or does not match its config: Adam.load_state_dict: " + message, err), err


TINY_TRAIN = ["train", "--steps", "2", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8", "--sample-every",
              "0", "--eval-every", "2"]


def test_resume_takes_the_run_folder_or_its_checkpoint_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY_TRAIN, "--out", str(out)]) == 0
    # --resume DIR/checkpoint.safetensors was read as the output folder ("cannot write ...: File exists")
    assert main(["train", "--resume", str(out / "checkpoint.safetensors"), "--steps", "4"]) == 0, \
        capsys.readouterr().err
    assert mg.load(out / "checkpoint.safetensors")["step"] == 4
    assert main(["train", "--resume", str(out), "--steps", "6"]) == 0
    assert mg.load(out / "checkpoint.safetensors")["step"] == 6


@pytest.mark.parametrize("command", [TINY_TRAIN, ["experiment", "adding", "--steps", "1", "--hidden-size", "4",
                                                  "--test-size", "10"]])
def test_a_new_run_refuses_a_folder_holding_other_files_and_leaves_them(tmp_path, capsys, command):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"the user\'s": "own file"}')
    (out / "results.json").write_text("an earlier experiment")
    assert main([*command, "--out", str(out)]) == 1
    assert capsys.readouterr().err == (f"minigrad-rnn: error: {out} is not empty (it holds config.json, results.json); "
                                       "a new run writes into a new or empty folder: choose another --out\n")
    assert (out / "config.json").read_text() == '{"the user\'s": "own file"}'
    assert sorted(os.listdir(out)) == ["config.json", "results.json"]


def test_a_finished_run_leaves_no_lock_and_a_killed_runs_lock_blocks_nobody(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY_TRAIN, "--out", str(out)]) == 0
    assert not (out / ".lock").exists()
    killed = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, time
        f = open({str(out / '.lock')!r}, "a")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "locked"
    killed.kill()
    killed.wait()
    assert (out / ".lock").exists()  # left by the killed run: its lock went with its process
    assert main(["train", "--resume", str(out), "--steps", "4"]) == 0, capsys.readouterr().err
    assert not (out / ".lock").exists()


def test_a_run_stopped_by_ctrl_c_removes_its_lock(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "minigrad_rnn", *TINY_TRAIN[:2], "1000000", *TINY_TRAIN[3:],
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (out / ".lock").exists()  # held while it runs
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode in (0, 130)  # stopped after its step, or interrupted before the loop began
    assert not (out / ".lock").exists()
