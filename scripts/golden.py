"""Golden --quick outputs: capture every command's `--quick` result files, and compare a fresh capture with them.

    python scripts/golden.py capture OUT          # runs `deft6g <command> --quick --out OUT/<command>` for each
    python scripts/golden.py compare tests/golden OUT

A refactor that must not change results is checked this way: capture before, capture after, compare. Each CSV
is compared row by row in file order and each JSON value by value: text and integers exactly, floats exactly
unless `--rtol` allows more; wall-time, CPU-time and memory columns and the speed files are skipped (they
depend on the machine and its load). The golden files in tests/golden come from one machine: floats computed
by TensorFlow may differ in the last digits on another processor, so compare captures made on one machine.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("design", "link", "study", "finetune", "connect", "ensemble", "transfer", "emulator")
MACHINE_DEPENDENT = {"train_s", "link_s", "eval_s", "wall_s", "cpu_s", "distill_s", "cache_s", "step_wall_s",
                     "step_cpu_s", "step_speedup", "step_cpu_speedup", "samples_per_s", "samples_per_s_with_cache",
                     "peak_rss_mib", "peak_rss_mb", "seconds_per_realisation", "speed",
                     "provenance"}                 # config.json: versions, commit and threads of the run
SKIPPED_FILES = ("speed.csv", "speed.json", "timing.json")


def capture(out):
    out = Path(out)
    env = {**os.environ, "DEFT6G_CACHE": str(out / "cache")}
    for command in COMMANDS:
        t0 = time.time()
        log = out / f"{command}.log"
        out.mkdir(parents=True, exist_ok=True)
        with log.open("w") as fh:
            rc = subprocess.call([sys.executable, "-m", "deft6g.benchmarks.cli", command, "--quick", "--out",
                                  str(out / command)], stdout=fh, stderr=subprocess.STDOUT, env=env)
        print(f"{command}: exit {rc}, {time.time() - t0:.0f} s (log: {log})")


def _differs(a, b, rtol):
    if a == b:
        return 0.0
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return math.inf
    if math.isnan(x) and math.isnan(y):
        return 0.0
    d = abs(x - y) / max(abs(x), abs(y)) if math.isfinite(x) and math.isfinite(y) else math.inf
    return d if d > rtol else 0.0


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()
                if key not in MACHINE_DEPENDENT}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def _records(path):
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [{k: v for k, v in r.items() if k not in MACHINE_DEPENDENT} for r in csv.DictReader(fh)]
    return [_flatten(json.loads(path.read_text()))]


def compare(golden, new, rtol=0.0):
    """Lines describing every difference; empty when the captures agree."""
    golden, new = Path(golden), Path(new)
    problems = []
    for g in sorted(p for p in golden.rglob("*") if p.suffix in (".csv", ".json") and p.name not in SKIPPED_FILES):
        rel = g.relative_to(golden)
        n = new / rel
        if not n.is_file():
            problems.append(f"{rel}: missing")
            continue
        a, b = _records(g), _records(n)
        if len(a) != len(b):
            problems.append(f"{rel}: {len(a)} rows golden, {len(b)} now")
            continue
        worst = {}
        for ra, rb in zip(a, b):
            for c in set(ra) | set(rb):
                d = _differs(ra.get(c), rb.get(c), rtol)
                if d:
                    worst[c] = max(worst.get(c, 0.0), d)
        if worst:
            problems.append(f"{rel}: " + ", ".join(f"{c} (max rel. {d:.1e})" for c, d in sorted(worst.items())))
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("capture").add_argument("out")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("golden")
    cmp_.add_argument("new")
    cmp_.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for floats (default 0: exact)")
    args = parser.parse_args(argv)
    if args.action == "capture":
        capture(args.out)
        return 0
    problems = compare(args.golden, args.new, args.rtol)
    print("\n".join(problems) if problems else "identical to the golden outputs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
