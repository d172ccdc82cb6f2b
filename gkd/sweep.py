"""Runs every point of a config's sweep: python -m gkd.sweep --config=configs/NAME.py[:ARG] --workdir=DIR

`get_sweep(arg)` in the config file returns a list of override dicts ({"objective.divergence_kw": {"beta": 0.9}, ...}).
Each point runs `python -m gkd.main` in its own process and workdir (DIR/points/NAME), so a
crash in one point cannot take down the others. Finished points (those with final_metrics.json)
are skipped, unfinished ones resume from their checkpoints, and a failing point (a bad config,
say) is recorded with its error while the rest run on. DIR/results.jsonl gets one row per point
and DIR/summary.{md,csv} the mean ± std over seeds; both are rewritten atomically after every
point, so killing the sweep loses nothing that had finished. A point process dies with the
sweep (even when the sweep is SIGKILLed; Linux), and each point's gkd.main holds a lock on
its workdir, so a restarted sweep never runs one point twice at once.
"""

import collections
import concurrent.futures
import ctypes
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys

import numpy as np
from absl import app, flags

from gkd import rundir
from gkd.rundir import atomic_write

_CONFIG = flags.DEFINE_string("config", None, "configs/NAME.py[:ARG], as for gkd.main.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points run at once (processes).")
_SET = flags.DEFINE_multi_string("set", [], "Extra key=value overrides for every point.")
flags.mark_flags_as_required(["config", "workdir"])

SUMMARY_METRICS = ("accuracy", "forward_kl", "reverse_kl", "nll", "teacher_logprob_of_samples",
                   "rougeL", "distinct_2")


def load_sweep(config_arg: str) -> list[dict]:
  """The config file's get_sweep(arg) points (the arg after ':' is passed on, as to get_config)."""
  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("gkd_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} has no get_sweep(); nothing to sweep.")
  return list(module.get_sweep(arg or None))


def flat_overrides(overrides: dict) -> dict:
  """Dict values spelled as dotted keys: {"objective.divergence_kw": {"beta": 1}} ->
  {"objective.divergence_kw.beta": 1} (an empty dict stays as it is)."""
  flat = {}
  for key, value in overrides.items():
    if isinstance(value, dict) and value:
      flat.update(flat_overrides({f"{key}.{k}": v for k, v in value.items()}))
    else:
      flat[key] = value
  return flat


def point_name(overrides: dict) -> str:
  """A readable directory name from the last part of each (flattened) key."""
  short = {k.rsplit(".", 1)[-1]: v for k, v in flat_overrides(overrides).items()}
  return ",".join(f"{k}={v}" for k, v in short.items()).replace("/", "_")


def _die_with_parent(parent: int):
  """In the child before exec: ask the kernel for SIGKILL when the launching thread dies.

  The thread that starts a point waits for it, so the signal comes only when the sweep
  process itself is gone. Without prctl (not Linux) the workdir lock still prevents
  two processes on one point.
  """
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    return
  if os.getppid() != parent:  # the sweep died before prctl took effect
    os._exit(1)


def run_point(config_arg: str, overrides: dict, workdir: str, log_path: str) -> dict:
  """Runs (or resumes, or skips) one point; returns its results row."""
  row = {"point": os.path.basename(workdir), "overrides": overrides, "workdir": workdir}
  final = os.path.join(workdir, rundir.FINAL_METRICS)
  if not os.path.exists(final):
    cmd = [sys.executable, "-m", "gkd.main", f"--config={config_arg}", f"--workdir={workdir}",
           "--config.train.progress_bar=false"]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    os.makedirs(workdir, exist_ok=True)
    with open(log_path, "w") as log:
      proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=functools.partial(_die_with_parent, os.getpid()))
    if proc.returncode != 0 or not os.path.exists(final):
      with open(log_path) as log:
        tail = log.read().strip().splitlines()[-1:] or ["(no output)"]
      return {**row, "status": "failed", "error": tail[0], "log": log_path}
  with open(final) as f:
    return {**row, "status": "done", "metrics": json.load(f)}


def summarize(rows: list[dict]) -> tuple[str, str]:
  """Markdown and CSV tables: one line per point with the seed removed, mean ± std over seeds."""
  groups = collections.defaultdict(list)
  for r in rows:
    flat = flat_overrides(r["overrides"])
    groups[tuple((k, str(v)) for k, v in flat.items() if k != "seed")].append(r)
  keys = list(dict.fromkeys(k for key in groups for k, _ in key))  # union, in first-seen order
  columns = [k.rsplit(".", 1)[-1] for k in keys]
  metrics = [m for m in SUMMARY_METRICS if any(m in r.get("metrics", {}) for r in rows)]
  md = ["| " + " | ".join(columns + ["seeds", "failed"] + metrics) + " |",
        "|" + "---|" * (len(columns) + 2 + len(metrics))]
  csv = [",".join(columns + ["seeds", "failed"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")])]
  for key, members in groups.items():
    done = [r for r in members if r["status"] == "done"]
    values = dict(key)
    head = [str(values.get(k, "")) for k in keys] + [str(len(done)), str(len(members) - len(done))]
    stats = []
    for m in metrics:
      values = [r["metrics"][m] for r in done if r["metrics"].get(m) is not None]
      stats.append((float(np.mean(values)), float(np.std(values))) if values else (float("nan"),) * 2)
    md.append("| " + " | ".join(head + [f"{a:.3f} ± {b:.3f}" for a, b in stats]) + " |")
    csv.append(",".join(head + [f"{x:.6g}" for pair in stats for x in pair]))
  return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def write_results(workdir: str, rows: list[dict]):
  atomic_write(os.path.join(workdir, "results.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
  md, csv = summarize(rows)
  atomic_write(os.path.join(workdir, "summary.md"), md)
  atomic_write(os.path.join(workdir, "summary.csv"), csv)


def run_sweep(config_arg: str, workdir: str, *, parallel: int = 1, extra: dict | None = None) -> list[dict]:
  points = [{**p, **(extra or {})} for p in load_sweep(config_arg)]
  names = [point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise ValueError("get_sweep() returned duplicate points.")
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  rows = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    futures = {pool.submit(run_point, config_arg, p, os.path.join(workdir, "points", n),
                           os.path.join(workdir, "logs", f"{n}.log")): n for p, n in zip(points, names)}
    for future in concurrent.futures.as_completed(futures):
      name = futures[future]
      rows[name] = future.result()
      status = rows[name]["status"]
      print(f"[{len(rows)}/{len(points)}] {name}: {status}"
            + (f" — {rows[name]['error']}" if status == "failed" else ""), flush=True)
      write_results(workdir, [rows[n] for n in names if n in rows])
  return [rows[n] for n in names]


def main(argv):
  del argv
  extra = dict(item.split("=", 1) for item in _SET.value)
  rows = run_sweep(_CONFIG.value, _WORKDIR.value, parallel=_PARALLEL.value, extra=extra)
  failed = sum(r["status"] == "failed" for r in rows)
  print(f"{len(rows) - failed} points done, {failed} failed; results in {_WORKDIR.value}/results.jsonl")


if __name__ == "__main__":
  app.run(main)
