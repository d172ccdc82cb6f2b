"""Runs every point of a config's sweep: python -m gkd.sweep --config=configs/NAME.py[:ARG] --workdir=DIR

`get_sweep(arg)` in the config file returns a list of override dicts ({"objective.divergence_kw": {"beta": 0.9}, ...}).
Each point runs `python -m gkd.main` in its own process and workdir (DIR/points/NAME), so a
crash in one point cannot take down the others. Finished points (those with final_metrics.json)
are skipped, unfinished ones resume from their checkpoints, and a failing point (a bad config,
say) is recorded with its error while the rest run on. DIR/results.jsonl gets one row per point,
DIR/summary.{md,csv} each method's mean with a 95% bootstrap CI, and DIR/differences.csv the
paired differences to the first method (gkd.eval.summary); all are rewritten atomically after
every point, so killing the sweep loses nothing that had finished. A point process dies with the
sweep (even when the sweep is SIGKILLed; Linux), and each point's gkd.main holds a lock on
its workdir, so a restarted sweep never runs one point twice at once.
"""

import concurrent.futures
import ctypes
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys

from absl import flags

from gkd import cli, rundir
from gkd.errors import ConfigError, MissingFile, UserError
from gkd.eval import summary
from gkd.rundir import atomic_write

_CONFIG = flags.DEFINE_string("config", None, "configs/NAME.py[:ARG], as for gkd.main.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Points run at once (processes).")
_SET = flags.DEFINE_multi_string("set", [], "Extra key=value overrides for every point.")
flags.mark_flags_as_required(["config", "workdir"])

def load_sweep(config_arg: str) -> list[dict]:
  """The config file's get_sweep(arg) points (the arg after ':' is passed on, as to get_config)."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise MissingFile(f"--config={config_arg}: no such config file {path!r}.")
  spec = importlib.util.spec_from_file_location("gkd_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ConfigError(f"{path} has no get_sweep(); nothing to sweep.")
  return list(module.get_sweep(arg or None))


def point_name(overrides: dict) -> str:
  """A readable directory name from the last part of each (flattened) key."""
  short = {k.rsplit(".", 1)[-1]: v for k, v in summary.flat_overrides(overrides).items()}
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


def write_results(workdir: str, rows: list[dict]):
  atomic_write(os.path.join(workdir, "results.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
  for name, text in summary.build(rows, workdir).items():
    atomic_write(os.path.join(workdir, name), text)


def run_sweep(config_arg: str, workdir: str, *, parallel: int = 1, extra: dict | None = None) -> list[dict]:
  points = [{**p, **(extra or {})} for p in load_sweep(config_arg)]
  names = [point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise ConfigError(f"{config_arg}: get_sweep() returned duplicate points.")
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
  bad = [item for item in _SET.value if "=" not in item]
  if bad:
    raise UserError(f"--set={bad[0]}: write --set=key=value.")
  extra = dict(item.split("=", 1) for item in _SET.value)
  rows = run_sweep(_CONFIG.value, _WORKDIR.value, parallel=_PARALLEL.value, extra=extra)
  failed = sum(r["status"] == "failed" for r in rows)
  print(f"{len(rows) - failed} points done, {failed} failed; results in {_WORKDIR.value}/results.jsonl")


if __name__ == "__main__":
  cli.run(main)
