"""Time-budget benchmark: a ``time_budget`` run against the shipped config stopped at the same wall time and the
shipped config with ``epochs`` chosen by hand to fit.

    python -m easycls.bench --budget                                    # configs/fashion_mnist.py, 2, 5 and 10 min
    python -m easycls.bench --budget --budgets 120 --config my_config.py --out bench_budget

Every run is a whole ``python train.py`` process, timed from its launch (start-up, scan, decode, epochs, final
writes: what a budget bounds). First the shipped config runs without a budget until the longest budget has passed
and it has finished ``--epochs-for-b`` epochs; the wall time at which each of its epochs ended (``results.csv`` is
watched) gives arm (b), the best val accuracy it had reached by each budget, and the number of epochs that fit
each budget (arm c). Then, for each budget, a ``time_budget`` run (arm a) and the hand-fitted run (arm c). The
budget ``B`` is also the time of the shipped config's first ``--epochs-for-b`` epochs. The table goes to the
console and ``<out>/budget.json``. Run it on an otherwise idle machine: every arm is timed by the wall clock.
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def watch_run(args: List[str], save_dir: str, stop_after: Optional[float] = None,
              stop_when=lambda epochs: False) -> Dict:
    """Run ``python train.py *args`` from the repository root; record the wall time (from launch) at which each
    epoch's row appears in ``save_dir/results.csv``. Stopped with SIGINT (as Ctrl-C) once ``stop_after`` seconds
    have passed and ``stop_when(epoch_rows)`` holds. Returns the epochs' rows with ``wall``, and the process's
    total wall time."""
    results, console = os.path.join(save_dir, "results.csv"), save_dir.rstrip("/") + ".console.txt"
    os.makedirs(os.path.dirname(console) or ".", exist_ok=True)
    start = time.monotonic()
    with open(console, "w", encoding="utf-8") as log:  # a file, not a pipe: a full pipe would stall the run
        process = subprocess.Popen([sys.executable, "train.py", *args, f"save_dir={save_dir}"], cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        rows, stopping = _watch(process, results, start, stop_after, stop_when)
    wall = time.monotonic() - start
    if process.returncode not in (0, 130, -signal.SIGINT) and not stopping:
        with open(console, encoding="utf-8") as log:
            raise RuntimeError(f"train.py {' '.join(args)} failed:\n{log.read()[-2000:]}")
    if os.path.isfile(results):  # the last epoch may land as the process ends
        table = pd.read_csv(results)
        rows += [{**row.to_dict(), "wall": round(wall, 1)} for _, row in table.iloc[len(rows):].iterrows()]
    return {"epochs": rows, "wall": round(wall, 1)}


def _watch(process, results: str, start: float, stop_after: Optional[float], stop_when):
    """Poll ``results.csv`` until the process ends; SIGINT it once ``stop_after`` has passed and ``stop_when``."""
    rows, seen, stopping = [], 0.0, False
    while process.poll() is None:
        time.sleep(0.25)
        if os.path.isfile(results) and os.path.getmtime(results) != seen:
            try:
                table = pd.read_csv(results)
            except (pd.errors.EmptyDataError, pd.errors.ParserError):  # caught mid-write: read it next time
                continue
            seen = os.path.getmtime(results)
            for _, row in table.iloc[len(rows):].iterrows():
                rows.append({**row.to_dict(), "wall": round(time.monotonic() - start, 1)})
        if not stopping and stop_after is not None and time.monotonic() - start > stop_after and stop_when(rows):
            process.send_signal(signal.SIGINT)
            stopping = True
    return rows, stopping


def best_by(rows: List[Dict], seconds: float) -> Optional[float]:
    """The best val accuracy among the epochs that had ended by ``seconds`` after launch."""
    scores = [row["val_acc"] for row in rows if row["wall"] <= seconds]
    return max(scores) if scores else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m easycls.bench --budget", description=__doc__.split("\n")[0])
    parser.add_argument("--budget", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="configs/fashion_mnist.py")
    parser.add_argument("--budgets", type=float, nargs="+", default=[120, 300, 600], help="seconds")
    parser.add_argument("--epochs-for-b", type=int, default=8, help="B = this many epochs of the shipped config")
    parser.add_argument("--out", default="output/bench_budget")
    args = parser.parse_args(argv)
    config = ["--config", args.config]
    shipped = watch_run(config, os.path.join(args.out, "shipped"), stop_after=max(args.budgets),
                        stop_when=lambda rows: len(rows) >= args.epochs_for_b)
    epochs = shipped["epochs"]
    if len(epochs) < args.epochs_for_b:
        raise RuntimeError(f"the shipped config ended after {len(epochs)} epochs, before {args.epochs_for_b}")
    b = epochs[args.epochs_for_b - 1]["wall"]
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "config": args.config, "shipped_epochs": epochs, "B": b, "budgets": []}
    for seconds in [*args.budgets, b]:
        fit = sum(row["wall"] <= seconds for row in epochs)  # epochs the shipped run had ended by then
        budget = watch_run([*config, f"time_budget={seconds:g}"], os.path.join(args.out, f"budget_{seconds:g}"))
        row = {"budget_s": seconds, "budget_run_wall_s": budget["wall"],
               "budget_run_best_val_acc": max((r["val_acc"] for r in budget["epochs"]), default=None),
               "budget_run_epochs": len(budget["epochs"]), "shipped_stopped_best_val_acc": best_by(epochs, seconds),
               "hand_fitted_epochs": fit}
        if fit and seconds != b:
            hand = watch_run([*config, f"epochs={fit}"], os.path.join(args.out, f"epochs_{fit}"))
            row.update(hand_fitted_wall_s=hand["wall"],
                       hand_fitted_best_val_acc=max(r["val_acc"] for r in hand["epochs"]))
        report["budgets"].append(row)
        print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "budget.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    print(pd.DataFrame(report["budgets"]).to_string(index=False))
    return 0
