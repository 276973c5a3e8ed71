"""Print two benchmark result files side by side.

    python -m benchmarks.compare benchmarks/results/before.json benchmarks/results/after.json

Rows are matched by section, case, dtype and library; "new / old" below 1
means the new run was faster.
"""

import argparse
import json
import sys
from pathlib import Path


def load_rows(path):
    """The measured rows of a results file, keyed by what they measure."""
    results = json.loads(Path(path).read_text())
    rows = {}
    for row in results["rows"]:
        key = (row["section"], row.get("sweep") or row.get("cell") or "", row["case"], row["dtype"], row["library"])
        rows[key] = row
    return results["machine"], rows


def _cell(row):
    if row is None:
        return "-"
    if row.get("status") != "ok":
        return row.get("status", "?")
    scale, unit = (1e3, " ms") if row["unit"] == "s" else (1, " " + row["unit"])
    return f"{row['median'] * scale:.3g}{unit}"


def compare(old_path, new_path, out=sys.stdout):
    """Write a markdown table of both files' medians and their ratio."""
    old_machine, old = load_rows(old_path)
    new_machine, new = load_rows(new_path)
    for name, machine in (("old", old_machine), ("new", new_machine)):
        threads = ", ".join(f"{k}={v}" for k, v in machine.get("thread_env", {}).items()) or "default threads"
        print(f"- {name}: {machine.get('date')}, {machine.get('cpu')}, numpy {machine.get('numpy')}, "
              f"torch {machine.get('torch')}, {threads}, git {str(machine.get('git_head'))[:10]}", file=out)
    print("\n| section | case | dtype | library | old | new | new / old |", file=out)
    print("|---|---|---|---|---:|---:|---:|", file=out)
    for key in list(old) + [key for key in new if key not in old]:
        a, b = old.get(key), new.get(key)
        ratio = "-"
        if a and b and a.get("status") == b.get("status") == "ok" and a["median"] > 0:
            ratio = f"{b['median'] / a['median']:.2f}"
        section, sweep, case, dtype, library = key
        section = f"{section} ({sweep})" if sweep else section
        print(f"| {section} | {case} | {dtype} | {library} | {_cell(a)} | {_cell(b)} | {ratio} |", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Compare two benchmark result files.")
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    compare(args.old, args.new)


if __name__ == "__main__":
    main()
