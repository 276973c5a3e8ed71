"""End-to-end tests of `minigrad-rnn train` and `minigrad-rnn sample` on a slice of tinyshakespeare."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad_rnn.app.cli import main

TINY = ["--hidden-size", "16", "--batch-size", "4", "--seq-len", "16", "--sample-every", "0"]


@pytest.fixture
def text_file(shared_dir, tmp_path) -> Path:
    """The first 30,000 characters of tinyshakespeare: enough for 4 streams and the 5% splits."""
    source = shared_dir / "data" / "tinyshakespeare" / "input.txt"
    path = tmp_path / "shakespeare.txt"
    path.write_text(source.read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    return path


def run(capsys, *args):
    """main(args) in-process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_metrics(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_train_writes_config_checkpoint_metrics_and_learns(capsys, text_file, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--data", text_file, *TINY, "--lr", "0.01",
                            "--steps", "40", "--eval-every", "20", "--out", out)
    assert code == 0, err
    assert err == ""

    config = json.loads((out / "config.json").read_text())
    assert config["cell"] == "lstm" and config["hidden_size"] == 16 and config["steps"] == 40
    assert config["minutes"] is None  # --steps alone: no time limit
    assert config["data"] == str(text_file.resolve())

    rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [0, 20, 40]
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    vocab_size = len(set(text_file.read_text()))
    assert abs(first - math.log(vocab_size)) < 0.3  # an untrained model is close to uniform
    assert last < first - 0.5  # and 40 steps teach it the character frequencies at least
    assert float(rows[-1]["train_loss"]) < float(rows[1]["train_loss"])
    assert float(rows[-1]["chars_per_sec"]) > 0

    checkpoint = mg.load(out / "checkpoint.safetensors")
    assert checkpoint["step"] == 40
    assert checkpoint["vocab"] == sorted(set(text_file.read_text()))
    assert checkpoint["model"]["head.weight"].shape == (vocab_size, 16)
    assert checkpoint["model"]["head.weight"].dtype == np.float32

    results = json.loads((out / "results.json").read_text())
    assert results["val_loss"] == pytest.approx(last, rel=1e-5)
    assert results["test_bpc"] == pytest.approx(results["test_loss"] / math.log(2))
    assert f"validation loss: {last:.4f} nats/char" in stdout
    assert "test loss:" in stdout and "bits/char" in stdout
    assert "sample:" in stdout


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_train_other_cells_float64_and_optimizers(capsys, text_file, tmp_path, cell):
    out = tmp_path / cell
    code, _, err = run(capsys, "train", "--data", text_file, *TINY, "--cell", cell, "--dtype", "float64",
                       "--optimizer", "rmsprop", "--lr", "0.003", "--steps", "4", "--eval-every", "2", "--out", out)
    assert code == 0, err
    checkpoint = mg.load(out / "checkpoint.safetensors")
    assert checkpoint["config"]["cell"] == cell
    assert all(a.dtype == np.float64 for a in checkpoint["model"].values())
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == 0.003
    assert len(read_metrics(out)) == 3


def test_resume_continues_bit_for_bit(capsys, text_file, tmp_path):
    # two layers, dropout and a carried state: every piece of state must survive the checkpoint
    options = [*TINY, "--num-layers", "2", "--dropout", "0.2", "--eval-every", "3", "--sample-every", "3"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run(capsys, "train", "--data", text_file, *options, "--steps", "9", "--out", whole)[0] == 0
    assert run(capsys, "train", "--data", text_file, *options, "--steps", "6", "--out", split)[0] == 0
    code, stdout, err = run(capsys, "train", "--resume", split, "--steps", "9")
    assert code == 0, err
    assert stdout.startswith("resuming")

    assert read_metrics(split) != []
    strip = [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in read_metrics(split)]
    assert strip == [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in read_metrics(whole)]
    a, b = mg.load(whole / "checkpoint.safetensors"), mg.load(split / "checkpoint.safetensors")
    assert a["step"] == b["step"] == 9
    for name in a["model"]:
        np.testing.assert_array_equal(a["model"][name], b["model"][name])
    for x, y in zip(a["state"], b["state"]):
        np.testing.assert_array_equal(x, y)
    assert a["rng"] == b["rng"]
    assert json.loads((whole / "results.json").read_text()) | {"train_seconds": 0} == \
        json.loads((split / "results.json").read_text()) | {"train_seconds": 0}


def test_resume_refuses_to_change_the_model(capsys, text_file, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", "--data", text_file, *TINY, "--steps", "2", "--out", out)[0] == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    code, _, err = run(capsys, "train", "--resume", out, "--hidden-size", "32", "--steps", "4")
    assert code == 1
    assert err == f"minigrad-rnn: error: --hidden-size cannot change when resuming (the run in {out} has 16)\n"
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_fresh_run_refuses_a_folder_holding_a_run(capsys, text_file, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", "--data", text_file, *TINY, "--steps", "2", "--out", out)[0] == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    code, _, err = run(capsys, "train", "--data", text_file, *TINY, "--steps", "2", "--out", out)
    assert code == 1 and "already holds a run" in err and err.count("\n") == 1
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_train_without_data_uses_the_builtin_corpus(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", *TINY, "--steps", "2", "--eval-every", "1", "--out", out)
    assert code == 0, err
    assert "built-in corpus" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["data"] is None
    vocab = mg.load(out / "checkpoint.safetensors")["vocab"]
    assert {"d", "e", "f", ":", "(", ")", "_"} <= set(vocab)  # Python source


def test_sample_streams_from_a_checkpoint(capsys, text_file, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", "--data", text_file, *TINY, "--steps", "2", "--out", out)[0] == 0
    code, stdout, err = run(capsys, "sample", "--checkpoint", out, "--prime", "ROMEO:", "--length", "50",
                            "--seed", "3", "--temperature", "0.8", "--top-k", "5")
    assert code == 0, err
    assert stdout.startswith("ROMEO:") and stdout.endswith("\n")
    assert len(stdout) == len("ROMEO:") + 50 + 1
    assert set(stdout[:-1]) <= set(text_file.read_text())
    # the same seed gives the same text; the checkpoint file may be named directly
    again = run(capsys, "sample", "--checkpoint", out / "checkpoint.safetensors", "--prime", "ROMEO:", "--length", "50",
                "--seed", "3", "--temperature", "0.8", "--top-k", "5")[1]
    assert again == stdout


def test_sample_top_k_1_is_greedy(capsys, text_file, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", "--data", text_file, *TINY, "--steps", "2", "--out", out)[0] == 0
    texts = {run(capsys, "sample", "--checkpoint", out, "--length", "30", "--top-k", "1", "--seed", s)[1]
             for s in ("1", "2", "3")}
    assert len(texts) == 1


def test_console_script_and_python_m(text_file, tmp_path):
    script = Path(sys.executable).parent / "minigrad-rnn"
    assert script.exists(), f"console script not installed at {script} (install with pip install -e .)"
    out = tmp_path / "run"
    done = subprocess.run([str(script), "train", "--data", str(text_file), *TINY, "--steps", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoint.safetensors").exists()
    done = subprocess.run([sys.executable, "-m", "minigrad_rnn", "sample", "--checkpoint", str(out),
                           "--length", "20", "--seed", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == 1 + 20 + 1  # the default prime "\n", 20 characters, "\n"


def test_ctrl_c_saves_a_checkpoint_that_resumes(text_file, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minigrad_rnn", "train", "--data", str(text_file), *TINY,
                             "--steps", "100000", "--eval-every", "5", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").exists() or len(read_metrics(out)) < 2:  # validated at step 5
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    step = mg.load(out / "checkpoint.safetensors")["step"]
    assert f"interrupted at step {step}" in stdout
    assert int(read_metrics(out)[-1]["step"]) == step
    done = subprocess.run([sys.executable, "-m", "minigrad_rnn", "train", "--resume", str(out),
                           "--steps", str(step + 2)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert mg.load(out / "checkpoint.safetensors")["step"] == step + 2


def test_the_best_validation_is_kept_and_survives_a_resume(capsys, text_file, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--data", text_file, *TINY, "--lr", "0.05", "--steps", "30",
                            "--eval-every", "10", "--out", out)
    assert code == 0, err
    code, stdout, err = run(capsys, "train", "--resume", out, "--steps", "60")
    assert code == 0, err
    rows = [r for r in read_metrics(out) if r["val_loss"]]
    best_row = min(rows, key=lambda r: float(r["val_loss"]))
    best = mg.load(out / "best.safetensors")
    assert best["step"] == int(best_row["step"]) == best["best"]["step"]
    assert best["best"]["val_loss"] == pytest.approx(float(best_row["val_loss"]), rel=1e-5)
    results = json.loads((out / "results.json").read_text())
    assert results["best_step"] == best["step"] and results["best_val_loss"] == pytest.approx(best["best"]["val_loss"])
    assert results["step"] == 60
    assert mg.load(out / "checkpoint.safetensors")["best"] == best["best"]  # the last checkpoint knows it too
    code, sampled, err = run(capsys, "sample", "--checkpoint", out / "best.safetensors", "--length", "20", "--seed", "1")
    assert code == 0 and len(sampled) > 20, err
