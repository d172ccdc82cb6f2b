"""The layout of a run directory, and the atomic writes that keep it consistent when killed.

WORKDIR/
  config.json           the resolved config
  metrics.jsonl         one JSON row per logged step (train and `eval/` metrics)
  tb/                   TensorBoard events of the same metrics
  checkpoints/          orbax checkpoints (train state, data-iterator state, teacher cache)
  eval_examples.jsonl   the final evaluation, one row per held-out example
  final_metrics.json    the final evaluation's metrics; its presence marks a finished run
  export/               the student in Hugging Face format (loadable with source="pretrained")
  eval_examples_start.jsonl  the step-0 evaluation per example (eval.at_start; gkd.train.report)
  report.md, learning_curves.png  the run's report and its learning curves (gkd.train.report)
  .lock                 held (flock) by the process running the workdir; holds its pid

Files are written to `NAME.tmp.<pid>` and renamed, so a reader never sees half a file; a kill
can leave such a temporary behind, and the next run (holding the lock) removes it.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
EVAL_EXAMPLES = "eval_examples.jsonl"
FINAL_METRICS = "final_metrics.json"
EXPORT = "export"
LOCK = ".lock"
_TMP = re.compile(r".+\.tmp\.\d+$")


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir's lock."""


@contextlib.contextmanager
def lock(workdir: str):
  """Holds an exclusive flock on WORKDIR/.lock, so two processes never run one workdir at once.

  The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock file
  never blocks a resume.
  """
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, LOCK), "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "?"
      raise WorkdirBusy(f"{workdir} is in use by another process (pid {holder}); "
                        "wait for it or stop it first.") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_tmp(workdir: str) -> None:
  """Removes the `*.tmp.<pid>` files and directories a killed run left (call under `lock`)."""
  for name in os.listdir(workdir):
    path = os.path.join(workdir, name)
    if _TMP.match(name):
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it: all or nothing."""
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):  # the write failed part-way
      os.remove(tmp)


def atomic_dir(path: str, write) -> None:
  """Calls `write(tmp_dir)`, then swaps the finished directory in for `path`."""
  tmp = f"{path}.tmp.{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  write(tmp)
  shutil.rmtree(path, ignore_errors=True)
  os.rename(tmp, path)


def read_jsonl(path: str) -> list[dict]:
  """The rows of a JSON-lines file ([] when absent), up to a last line cut short by a kill."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut short by a kill: the resumed run rewrites it
        break
  return rows
