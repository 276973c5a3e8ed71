"""Benchmark minigrad against PyTorch, HIPS autograd, MyGrad and hand-written NumPy.

Run from the repository root::

    python -m benchmarks.run                 # everything (20-30 minutes)
    python -m benchmarks.run --quick         # small cases, few repeats (about 5 minutes)
    python -m benchmarks.run --only ops lstm --libs minigrad torch
    python -m benchmarks.run --out benchmarks/results/mine.json

Every comparison runs in this one process, so ratios hold on a noisy
machine. Each row is the median of several timed samples taken after a
warm-up call, with min and max shown; a sample repeats fast calls until it
lasts ``--min-time`` seconds, after a ``--settle`` pause (see :func:`settle`). Markdown tables go to stdout, progress to
stderr, and all numbers (with machine info) to a JSON file that
``python -m benchmarks.compare`` can put side by side with another.
"""

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import custom_cells, op_chain, rnn_steps  # noqa: E402
from benchmarks.rnn_steps import Unavailable  # noqa: E402

SECTIONS = ("ops", "lstm", "gru", "cells", "compile", "call", "checkpoint", "matmul", "scaling")
CALL_HIDDEN = 384  # the char-LM's default hidden size: sampling calls the layer once per character
CELL_CASES = [(32, 50, 128), (1, 100, 32)]  # (B, T, I = H), float32
COMPILE_CASE = (32, 50, 128)  # (B, T, I = H), float32; batch sizes above B give new signatures
CHECKPOINT_CASE, CHECKPOINT_EVERY = (16, 5000, 128), 70  # (B, T, I = H), float32: issue 13's case
RNN_CASES = [(32, 50, 128), (64, 100, 512), (16, 200, 64), (1, 100, 32)]  # (B, T, I = H)
QUICK_RNN_CASES = [(32, 50, 128), (16, 200, 64), (1, 100, 32)]
SCALING = {"T": (25, 50, 100, 200), "H": (32, 64, 128, 256, 512)}  # around B=32, T=50, H=128
QUICK_SCALING = {"T": (25, 100), "H": (64, 256)}
SCALING_LIBS = ("minigrad", "torch", "numpy-lstm")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
MB = 2**20


def log(message):
    print(message, file=sys.stderr, flush=True)


# --- measuring ----------------------------------------------------------------


def timed(fn, number):
    """Seconds per call of ``fn``, over ``number`` back-to-back calls."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def measure(fns, settings):
    """Time several functions, interleaved so that load changes hit them alike.

    ``fns`` maps a name to ``(fn, first)``, where ``first`` is the time its
    warm-up call took. Returns ``{name: (samples, note)}`` with samples in
    seconds per call. Functions slower than the slow limit are not repeated:
    the warm-up time is their only sample.
    """
    results, numbers = {}, {}
    for name, (fn, first) in fns.items():
        if first > settings.slow_limit:
            results[name] = ([first], f"single run (one call > {settings.slow_limit:g} s)")
        else:
            numbers[name] = max(1, math.ceil(settings.min_time / max(first, 1e-9)))
            results[name] = ([], "")
    for _ in range(settings.repeats):
        for name, number in numbers.items():
            settle(fns[name][0], settings)
            results[name][0].append(timed(fns[name][0], number))
    return results


def settle(fn, settings):
    """Let the previous library's idle threads stop spinning, then wake ``fn``'s own.

    OpenBLAS and OpenMP worker threads busy-wait for ~0.1 s after their last task. On
    two cores, timing torch right after NumPy (or the reverse) made its first calls
    2-3x slower, and samples of a fast step were mostly that. A pause and one untimed
    call before every sample keep the interleaving (load changes still hit every
    library alike) without the cross-talk.
    """
    time.sleep(settings.settle)
    fn()


def warm_up(fn):
    """Call ``fn`` once; return its result and how long it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def summary(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": len(samples)}


def peak_memory(fn, library):
    """Peak bytes allocated during one call of ``fn`` above what was live before, and how."""
    if library == "torch":
        return _torch_peak_memory(fn), "torch.profiler allocations"
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1], "tracemalloc"
    finally:
        tracemalloc.stop()


def _torch_peak_memory(fn):
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: torch's profiler logs every start and stop from C++."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_flops(kind, B, T, I, H):
    """Matmul flops of one training step: forward 2*T*B*G*H*(I+H), backward twice that."""
    return 3 * 2 * T * B * rnn_steps.GATES[kind] * H * (I + H)


# --- sections -----------------------------------------------------------------


def _record(rows, fns, settings, per_call=1.0):
    """Time the warmed-up ``fns`` together and store median/min/max in their rows."""
    measured = measure(fns, settings)
    for row in rows:
        if row["library"] in measured:
            samples, row["note"] = measured[row["library"]]
            row.update(summary([s * per_call for s in samples]), status="ok")


def _failed(row, err):
    """Mark a row whose library is missing or broken; a library being written must not stop the run."""
    row["status"] = str(err) if isinstance(err, Unavailable) else f"error: {type(err).__name__}: {err}"
    log(f"  {row['section']} {row['case']} {row['library']}: {row['status']}")


def run_op_chain(settings):
    """Per-op overhead of each library on a 1000-op elementwise chain."""
    rows, fns, reference = [], {}, op_chain.reference_grad()
    case = f"{op_chain.N_OPS} ops on {op_chain.SHAPE} float64"
    for library, build in op_chain.LIBRARIES.items():
        if not settings.wants(library):
            continue
        row = {"section": "ops", "case": case, "dtype": "float64", "library": library, "unit": "us/op"}
        rows.append(row)
        try:
            fn = build()
            warm_up(fn)
            result, first = warm_up(fn)
        except Exception as err:
            _failed(row, err)
            continue
        if not library.startswith("numpy"):
            error = np.max(np.abs(np.asarray(result) - reference)) / np.max(np.abs(reference))
            row["max_rel_grad_err"] = float(error)
        fns[library] = (fn, first)
    _record(rows, fns, settings, per_call=1e6 / op_chain.N_OPS)
    for row in rows:
        if row.get("status") == "ok":
            log(f"  ops {row['library']}: {row['median']:.2f} us/op")
    return rows


def _time_steps(rows, builders, data, settings, reference=None):
    """Build, warm up and time one training step per library (``builders[k](data)`` for ``rows[k]``),
    interleaved; each row's gradients are checked against ``reference`` (``{name: array}``), or if
    None against the first library that builds.  Returns ``{library: (step, first timing)}`` of
    those that built."""
    fns = {}
    for row, build in zip(rows, builders):
        try:
            step = build(data)
            warm_up(step)
            # Time the second call (the first may pay for lazy set-up); it must
            # also give the same gradients, not accumulated ones.
            grads, first = warm_up(step)
        except Exception as err:
            _failed(row, err)
            continue
        if reference is None:
            reference = grads
        else:
            row["max_rel_grad_err"] = rnn_steps.check_grads(grads, reference)
        fns[row["library"]] = (step, first)
    _record(rows, fns, settings)
    for row in rows:
        if row["library"] in fns:
            row["gflops"] = row["flops"] / row["median"] / 1e9
    return fns


def run_rnn_case(kind, B, T, H, dtype, libraries, settings, section):
    """Time one training step of every library on one case; return the rows.

    The first library (NumPy LSTM, or torch for the GRU) is the gradient reference."""
    dtype_name = np.dtype(dtype).name
    case = f"B={B} T={T} I=H={H}"
    flops = step_flops(kind, B, T, H, H)
    rows = [{"section": section, "kind": kind, "case": case, "B": B, "T": T, "I": H, "H": H, "dtype": dtype_name,
             "library": library, "unit": "s", "flops": flops} for library in libraries]
    fns = _time_steps(rows, [rnn_steps.LIBRARIES[library] for library in libraries],
                      rnn_steps.make_data(kind, B, T, H, H, dtype), settings)
    for row in rows:
        if row["library"] in fns:
            row["peak_mem_bytes"], row["mem_method"] = peak_memory(fns[row["library"]][0], row["library"])
            log(f"  {section} {case} {dtype_name} {row['library']}: {row['median'] * 1e3:.1f} ms")
    return rows


def rnn_libraries(kind, settings):
    """The libraries to run for ``kind``, the gradient reference first."""
    names = [name for name in rnn_steps.LIBRARIES if settings.wants(name)]
    if kind == "gru":
        names = [name for name in names if name != "numpy-lstm"]
    reference = "numpy-lstm" if kind == "lstm" else "torch"
    return sorted(names, key=lambda name: name != reference)


def run_rnn(kind, settings):
    """LSTM or GRU training steps on every case, float32 and float64."""
    rows = []
    for B, T, H in settings.rnn_cases:
        for dtype in (np.float32, np.float64):
            rows += run_rnn_case(kind, B, T, H, dtype, rnn_libraries(kind, settings), settings, kind)
    return rows


def run_cells(settings):
    """The example cells (what a user writes) through the driver, compiled and eager, and as a torch Module loop."""
    rows = []
    for B, T, H in CELL_CASES:
        for cell in custom_cells.CELLS:
            libraries = [name for name in custom_cells.LIBRARIES if settings.wants(name)]
            group = [{"section": "cells", "case": f"B={B} T={T} I=H={H}", "cell": cell, "dtype": "float32",
                      "library": library, "unit": "s", "flops": custom_cells.matmul_flops(cell, B, T, H)}
                     for library in libraries]
            # float32 rows of a layer-norm cell differ from each other by ~1e-4 after 50 steps, each
            # ~7e-5 from the float64 gradients: check every row against those
            exact = custom_cells.minigrad_cell(custom_cells.make_data(cell, B, T, H, np.float64))()
            fns = _time_steps(group, [custom_cells.LIBRARIES[name] for name in libraries],
                              custom_cells.make_data(cell, B, T, H, np.float32), settings, reference=exact)
            for row in group:
                if row["library"] in fns:
                    log(f"  cells {row['case']} {cell} {row['library']}: {row['median'] * 1e3:.1f} ms")
            rows += group
    return rows


def run_compile(settings):
    """What a new signature costs: deriving and writing a step's programs (``compiler.STATS``), and
    the first training step against a later one, for the built-in layers and the example cells."""
    if not settings.wants("minigrad"):
        return []
    compiler = rnn_steps.require("minigrad.compiler")
    B, T, H = COMPILE_CASE
    builders = {"lstm": rnn_steps.minigrad_rnn, "gru": rnn_steps.minigrad_rnn,
                **{cell: custom_cells.minigrad_cell for cell in custom_cells.CELLS if cell != "lstm"}}
    rows = []
    for cell, build in builders.items():
        row = {"section": "compile", "case": f"B>{B} T={T} I=H={H}", "cell": cell, "dtype": "float32",
               "library": "minigrad", "unit": "s"}
        builds, firsts, laters = [], [], []
        for batch in range(B + 1, B + 1 + 4 * settings.repeats):  # batch sizes until enough were new here
            if cell in ("lstm", "gru"):
                data = rnn_steps.make_data(cell, batch, T, H, H, np.float32)
            else:
                data = custom_cells.make_data(cell, batch, T, H, np.float32)
            step = build(data)
            seconds, programs = compiler.STATS["build_seconds"], compiler.STATS["programs"]
            first = warm_up(step)[1]
            if compiler.STATS["programs"] == programs:
                continue  # an earlier section compiled this signature already
            row["programs"] = compiler.STATS["programs"] - programs
            builds.append(compiler.STATS["build_seconds"] - seconds)
            firsts.append(first)
            laters.append(min(warm_up(step)[1] for _ in range(3)))
            if len(builds) == settings.repeats:
                break
        if not builds:
            rows.append(dict(row, status="every batch size tried was compiled before"))
            continue
        row.update(summary(builds), status="ok", first_call=statistics.median(firsts),
                   later_call=statistics.median(laters))
        log(f"  compile {cell}: {row['median'] * 1e3:.1f} ms for {row['programs']} programs")
        rows.append(row)
    return rows


def _compile_markdown(rows):
    """Each cell's compile cost, and its first training step against a later one."""
    lines = ["| case | cell | programs | ms to derive and write (median) | min-max | first step, ms | later step, ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['case']} | {r['cell']} |" + " |" * 4 + f" {r['status']} |")
            continue
        lines.append(f"| {r['case']} | {r['cell']} | {r['programs']} | {r['median'] * 1e3:.2f} | "
                     f"{_spread(r, 1e3, '.2f')} | {r['first_call'] * 1e3:.1f} | {r['later_call'] * 1e3:.1f} |")
    return "\n".join(lines)


def run_call(settings):
    """What one call costs where calls, not flops, dominate: an LSTM layer at B=1 T=1 (sampling from the
    char-LM calls it once per character) under no_grad and as a training step, and a small
    ``minigrad.compile``d function's training step; each compiled (the default) and eager, interleaved."""
    if not settings.wants("minigrad"):
        return []
    mg = rnn_steps.require("minigrad")
    LSTM = rnn_steps.require("minigrad_rnn").LSTM
    rng = np.random.default_rng(0)
    H = CALL_HIDDEN
    layers = {compile: LSTM(H, H, dtype=np.float32, rng=np.random.default_rng(0), compile=compile)  # noqa: A002
              for compile in (True, False)}
    x = mg.Tensor(rng.standard_normal((1, 1, H)).astype(np.float32))
    w1, w2 = (mg.Tensor(rng.standard_normal(shape) * 0.1, requires_grad=True) for shape in ((64, 64), (64, 64)))
    mlp_x = mg.Tensor(rng.standard_normal((8, 64)))

    def mlp(x):
        return (mg.tanh(mg.tanh(x @ w1) @ w2) ** 2).sum()

    def sample(layer):
        def call():
            with mg.no_grad():
                layer(x)
        return call

    def train(layer):
        def call():
            layer.zero_grad()
            layer(x)[0].sum().backward()
        return call

    def mlp_step(fn):
        def call():
            w1.grad = w2.grad = None
            fn(mlp_x).backward()
        return call

    cases = {f"LSTM H={H} B=1 T=1, no_grad (a sampled character)": {c: sample(layers[c]) for c in (True, False)},
             f"LSTM H={H} B=1 T=1, forward + backward": {c: train(layers[c]) for c in (True, False)},
             "compile(fn): a 2-layer tanh MLP (8, 64), forward + backward": {True: mlp_step(mg.compile(mlp)),
                                                                            False: mlp_step(mlp)}}
    rows = []
    for case, calls in cases.items():
        group = [{"section": "call", "case": case, "dtype": "float32" if "LSTM" in case else "float64",
                  "library": "minigrad" if compiled else "minigrad-eager", "unit": "s"} for compiled in calls]
        fns = {row["library"]: (calls[row["library"] == "minigrad"], warm_up(calls[row["library"] == "minigrad"])[1])
               for row in group}
        _record(group, fns, settings)
        for row in group:
            log(f"  call {case} {row['library']}: {row['median'] * 1e6:.0f} us")
        rows += group
    return rows


def _call_markdown(rows):
    """Each case's microseconds per call, compiled and eager."""
    lines = ["| case | library | us per call (median) | min-max | x eager |", "|---|---|---:|---:|---:|"]
    eager = {r["case"]: r for r in rows if r["library"] == "minigrad-eager" and r.get("status") == "ok"}
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['case']} | {r['library']} | | | {r.get('status', '')} |")
            continue
        ratio = f"{r['median'] / eager[r['case']]['median']:.2f}" if r["case"] in eager else "-"
        lines.append(f"| {r['case']} | {r['library']} | {r['median'] * 1e6:.0f} | {_spread(r, 1e6, '.0f')} | {ratio} |")
    return "\n".join(lines)


def run_checkpoint(settings):
    """A long-sequence LSTM step plainly and with ``checkpoint_every``: time and peak memory, interleaved."""
    B, T, H = CHECKPOINT_CASE
    libraries = {"minigrad": rnn_steps.minigrad_rnn,
                 f"minigrad checkpoint_every={CHECKPOINT_EVERY}":
                     lambda data: rnn_steps.minigrad_rnn(data, checkpoint_every=CHECKPOINT_EVERY)}
    rows = [{"section": "checkpoint", "case": f"B={B} T={T} I=H={H}", "dtype": "float32", "library": library,
             "unit": "s", "flops": step_flops("lstm", B, T, H, H)} for library in libraries if settings.wants(library)]
    fns = _time_steps(rows, [libraries[row["library"]] for row in rows],
                      rnn_steps.make_data("lstm", B, T, H, H, np.float32), settings)
    for row in rows:
        if row["library"] in fns:
            row["peak_mem_bytes"], row["mem_method"] = peak_memory(fns[row["library"]][0], "minigrad")
            log(f"  checkpoint {row['library']}: {row['median']:.2f} s, {row['peak_mem_bytes'] / MB:.0f} MB")
    return rows


def _checkpoint_markdown(rows):
    """Each row's time and peak memory, and both against the plain run's."""
    plain = next((r for r in rows if r["library"] == "minigrad" and r.get("status") == "ok"), None)
    lines = ["| case | library | s (median) | min-max | x plain time | peak MB | plain / peak | grad check | note |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['case']} | {r['library']} |" + " |" * 6 + f" {r.get('status', '')} |")
            continue
        ratios = ([f"{r['median'] / plain['median']:.2f}", f"{r['peak_mem_bytes'] / MB:.0f}",
                   f"{plain['peak_mem_bytes'] / r['peak_mem_bytes']:.1f}"] if plain else
                  ["-", f"{r['peak_mem_bytes'] / MB:.0f}", "-"])
        check = _grad_check(r) if "max_rel_grad_err" in r else "ref"
        lines.append("| " + " | ".join([r["case"], r["library"], f"{r['median']:.2f}", _spread(r, 1, ".2f")] + ratios
                                       + [check, _status(r)]) + " |")
    return "\n".join(lines)


def _cells_markdown(rows):
    """Times, against torch's Module loop and, per matmul FLOP, against the built-in LSTM compiled."""
    ok = {(r["case"], r["cell"], r["library"]): r for r in rows if r.get("status") == "ok"}
    header = ["case", "cell", "library", "ms (median)", "min-max", "x torch loop", "x lstm per FLOP", "grad check",
              "note"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        cells = [r["case"], r["cell"], r["library"]]
        if r.get("status") != "ok":
            lines.append("| " + " | ".join(cells + [""] * 5 + [r.get("status", "")]) + " |")
            continue
        torch_row, lstm_row = ok.get((r["case"], r["cell"], "torch")), ok.get((r["case"], "lstm", r["library"]))
        per_flop = (r["median"] / r["flops"]) / (lstm_row["median"] / lstm_row["flops"]) if lstm_row else None
        cells += [f"{r['median'] * 1e3:.2f}", _spread(r, 1e3, ".2f"),
                  f"{r['median'] / torch_row['median']:.2f}" if torch_row else "-",
                  f"{per_flop:.2f}" if per_flop is not None and r["cell"] != "indrnn" else "-",
                  _grad_check(r) if "max_rel_grad_err" in r else "ref", _status(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_matmul(settings):
    """NumPy's (and torch's) matmul speed on this machine: the ceiling for every library."""
    shapes = [(1024, 1024, 1024, "square")]
    for B, T, H in settings.rnn_cases:
        shapes.append((T * B, H, 4 * H, f"LSTM input projection, B={B} T={T} H={H}"))
        shapes.append((B, H, 4 * H, f"LSTM step h @ W_hh^T, B={B} H={H}"))
    rows = []
    for m, k, n, what in shapes:
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(0)
            a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
            candidates = {"numpy": lambda: a @ b}
            if what == "square" and settings.wants("torch"):
                try:
                    torch = rnn_steps.require("torch")
                    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                    candidates["torch"] = lambda: ta @ tb
                except Unavailable:
                    pass
            group, fns = [], {}
            for library, fn in candidates.items():
                case = f"({m}x{k})@({k}x{n}) {what}"
                group.append({"section": "matmul", "case": case, "dtype": np.dtype(dtype).name,
                              "library": library, "unit": "s", "flops": 2 * m * k * n})
                fns[library] = (fn, warm_up(fn)[1])
            _record(group, fns, settings)
            for row in group:
                row["gflops"] = row["flops"] / row["median"] / 1e9
                row["best_gflops"] = row["flops"] / row["min"] / 1e9
                log(f"  matmul {row['case']} {row['dtype']} {row['library']}: {row['gflops']:.1f} GFLOP/s")
            rows += group
    return rows


def run_scaling(settings):
    """How step time and memory of the float32 LSTM grow with T and with H."""
    libraries = [name for name in rnn_libraries("lstm", settings) if name in SCALING_LIBS]
    rows = []
    for axis, values in settings.scaling.items():
        for value in values:
            B, T, H = 32, (value if axis == "T" else 50), (value if axis == "H" else 128)
            for row in run_rnn_case("lstm", B, T, H, np.float32, libraries, settings, "scaling"):
                row["sweep"] = axis
                rows.append(row)
    return rows


# --- reporting ----------------------------------------------------------------


def machine_info():
    """What the numbers were measured on."""
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "numpy_blas": _numpy_blas(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "git_head": _git_head(),
        "load_average": os.getloadavg(),  # other work on the machine skews the numbers
    }
    for name in ("torch", "autograd", "mygrad", "minigrad"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "installed")
        except ImportError:
            info[name] = "not installed"
    if info["torch"] != "not installed":
        import torch

        info["torch_num_threads"] = torch.get_num_threads()
        info["torch_mkldnn"] = torch.backends.mkldnn.is_available()
    return info


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _numpy_blas():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except Exception:  # the config layout differs between NumPy versions
        return "unknown"


def _git_head():
    """The checked-out commit, read from .git without running git."""
    git = Path(__file__).resolve().parents[1] / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = git / head[5:]
            return ref.read_text().strip() if ref.exists() else head[5:]
        return head
    except OSError:
        return "unknown"


def _spread(row, scale, fmt):
    return f"{row['min'] * scale:{fmt}}-{row['max'] * scale:{fmt}}"


def _grad_check(row):
    """The relative gradient error, flagged when too big for the dtype's rounding."""
    error = row["max_rel_grad_err"]
    tolerance = 1e-4 if row["dtype"] == "float32" else 1e-9
    return f"{error:.0e}" + ("" if error <= tolerance else " MISMATCH")


def _status(row):
    return row.get("note") or ("" if row["status"] == "ok" else row["status"])


def markdown(section, rows):
    """The rows of one section as a markdown table."""
    if section == "ops":
        lines = ["| library | us/op (median) | min-max | fwd+bwd of 1000 ops, ms | grad check | note |"]
        lines.append("|---|---:|---:|---:|---|---|")
        for r in rows:
            if r["status"] != "ok":
                lines.append(f"| {r['library']} | | | | | {r['status']} |")
                continue
            check = _grad_check(r) if "max_rel_grad_err" in r else "-"
            lines.append(
                f"| {r['library']} | {r['median']:.2f} | {_spread(r, 1, '.2f')} | "
                f"{r['median'] * op_chain.N_OPS / 1e3:.2f} | {check} | {_status(r)} |"
            )
        return "\n".join(lines)
    if section == "cells":
        return _cells_markdown(rows)
    if section == "checkpoint":
        return _checkpoint_markdown(rows)
    if section == "compile":
        return _compile_markdown(rows)
    if section == "call":
        return _call_markdown(rows)
    if section == "matmul":
        lines = ["| matmul | dtype | library | GFLOP/s (median) | best | ms |", "|---|---|---|---:|---:|---:|"]
        for r in rows:
            lines.append(
                f"| {r['case']} | {r['dtype']} | {r['library']} | {r['gflops']:.1f} | "
                f"{r['best_gflops']:.1f} | {r['median'] * 1e3:.3f} |"
            )
        return "\n".join(lines)
    return _rnn_markdown(section, rows)


def _rnn_markdown(section, rows):
    """LSTM/GRU rows, with each time relative to torch's and (LSTM) to the NumPy LSTM's."""
    baselines = ["torch"] + (["numpy-lstm"] if any(r["library"] == "numpy-lstm" for r in rows) else [])
    times = {(r["library"], r.get("sweep"), r["case"], r["dtype"]): r["median"] for r in rows if r["status"] == "ok"}
    sweep = ["sweep"] if section == "scaling" else []
    header = sweep + ["case", "dtype", "library", "ms (median)", "min-max"]
    header += [f"x {name}" for name in baselines] + ["GFLOP/s", "peak MB", "grad check", "note"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in _table_order(rows):
        cells = [r["sweep"]] if sweep else []
        cells += [r["case"], r["dtype"], r["library"]]
        if r["status"] != "ok":
            cells += [""] * (len(header) - len(cells) - 1) + [r["status"]]
        else:
            cells += [f"{r['median'] * 1e3:.2f}", _spread(r, 1e3, ".2f")]
            for name in baselines:
                base = times.get((name, r.get("sweep"), r["case"], r["dtype"]))
                cells.append(f"{r['median'] / base:.2f}" if base else "-")
            check = _grad_check(r) if "max_rel_grad_err" in r else "ref"
            cells += [f"{r['gflops']:.1f}", f"{r['peak_mem_bytes'] / MB:.1f}", check, _status(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table_order(rows):
    """Rows grouped by case and dtype as measured, libraries in the usual order within a group."""
    groups = {}
    for row in rows:
        groups.setdefault((row.get("sweep"), row["case"], row["dtype"]), []).append(row)
    order = list(rnn_steps.LIBRARIES)
    return [row for group in groups.values() for row in sorted(group, key=lambda r: order.index(r["library"]))]


def growth(rows):
    """Log-log slopes of time and memory against T and H: 1 means linear growth."""
    lines = ["| library | time ~ T^a | memory ~ T^a | time ~ H^a | memory ~ H^a |", "|---|---:|---:|---:|---:|"]
    for library in SCALING_LIBS:
        cells = []
        for axis in ("T", "H"):
            points = [r for r in rows if r["library"] == library and r["sweep"] == axis and r["status"] == "ok"]
            for key in ("median", "peak_mem_bytes"):
                if len(points) < 2:
                    cells.append("-")
                    continue
                x = np.log([r[axis] for r in points])
                y = np.log([max(r[key], 1e-12) for r in points])
                cells.append(f"{np.polyfit(x, y, 1)[0]:.2f}")
        lines.append(f"| {library} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases and few repeats, for a quick look")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                        help=f"run only these sections: {', '.join(SECTIONS)}")
    parser.add_argument("--libs", nargs="+", help="run only these libraries (e.g. minigrad torch numpy-lstm)")
    parser.add_argument("--repeats", type=int, help="timed samples per row (default 7, quick 3)")
    parser.add_argument("--min-time", type=float, help="seconds per timed sample (default 0.1, quick 0.02)")
    parser.add_argument("--settle", type=float, default=0.2,
                        help="seconds to pause before each timed sample, so one library's spinning "
                             "threads do not slow the next (default 0.2)")
    parser.add_argument("--slow-limit", type=float, help="time a step only once when it takes longer (s)")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads(N) (default: torch's own default)")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="keep freed heap memory in the process (minigrad.retain_freed_memory, as "
                             "minigrad-rnn does); applies to every library alike")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.repeats = args.repeats or (3 if quick else 7)
    args.min_time = args.min_time if args.min_time is not None else (0.02 if quick else 0.1)
    args.slow_limit = args.slow_limit if args.slow_limit is not None else (2.0 if quick else 10.0)
    args.rnn_cases = QUICK_RNN_CASES if quick else RNN_CASES
    args.scaling = QUICK_SCALING if quick else SCALING
    libs = set(args.libs) if args.libs else None
    args.wants = lambda library: libs is None or library in libs or library.split(" ")[0] in libs
    return args


def main(argv=None):
    """Run the chosen sections, print markdown tables and write the JSON results."""
    settings = parse_args(argv)
    if settings.torch_threads:
        try:
            import torch

            torch.set_num_threads(settings.torch_threads)
        except ImportError:
            pass
    retained = settings.retain_freed_memory and rnn_steps.require("minigrad").retain_freed_memory()
    info = machine_info()
    print(f"# minigrad benchmarks ({'quick' if settings.quick else 'full'})\n")
    print(f"- {info['cpu']}, {info['cpu_count']} cores; Python {info['python']}; NumPy {info['numpy']} ({info['numpy_blas']})")
    torch_note = ""
    if "torch_num_threads" in info:
        how = "set by --torch-threads" if settings.torch_threads else "its default"
        if not settings.torch_threads and "OMP_NUM_THREADS" in os.environ:
            how = "from OMP_NUM_THREADS"
        torch_note = f", {info['torch_num_threads']} threads ({how})"
    print(f"- torch {info['torch']}{torch_note}; autograd {info['autograd']}; mygrad {info['mygrad']}")
    if info["thread_env"]:
        print(f"- thread settings: {', '.join(f'{k}={v}' for k, v in info['thread_env'].items())}")
    print(f"- allocator: {'glibc keeping 1 GB of freed memory (--retain-freed-memory)' if retained else 'system default'}")
    print(f"- load average at start: {', '.join(f'{x:.2f}' for x in info['load_average'])}")
    print(f"- median of {settings.repeats} samples after a warm-up, each sample >= {settings.min_time:g} s "
          f"after a {settings.settle:g} s pause and one untimed call; "
          "x torch = time / torch's time (below 1: faster than torch), likewise x numpy-lstm")
    print("- peak MB: allocations during one step above those live before it "
          "(tracemalloc; torch: torch.profiler allocation events)\n")

    runners = {
        "ops": run_op_chain,
        "lstm": lambda s: run_rnn("lstm", s),
        "gru": lambda s: run_rnn("gru", s),
        "cells": run_cells,
        "compile": run_compile,
        "call": run_call,
        "checkpoint": run_checkpoint,
        "matmul": run_matmul,
        "scaling": run_scaling,
    }
    results = {"machine": info, "settings": {
        "quick": settings.quick, "repeats": settings.repeats, "min_time": settings.min_time,
        "slow_limit": settings.slow_limit, "settle": settings.settle, "sections": settings.only, "libs": settings.libs,
        "torch_threads": settings.torch_threads, "retain_freed_memory": bool(retained),
    }, "rows": []}
    for section in SECTIONS:
        if section not in settings.only:
            continue
        log(f"[{section}]")
        rows = runners[section](settings)
        results["rows"] += rows
        print(f"## {section}\n\n{markdown(section, rows)}\n", flush=True)
        if section == "scaling":
            print(f"Growth exponents (log-log fit):\n\n{growth(rows)}\n", flush=True)

    results["machine"]["load_average_end"] = os.getloadavg()
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {settings.out}")


if __name__ == "__main__":
    main()
