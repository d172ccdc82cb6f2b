"""Run outputs: config.json, metrics.jsonl and TensorBoard events in the workdir.

After a resume, rows logged past the restored checkpoint are dropped (and TensorBoard is told
to purge them), so a killed-and-resumed run leaves the same metrics as an uninterrupted one.
"""

import json
import math
import os

import numpy as np
from tensorboardX import SummaryWriter


def atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _jsonable(value):
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  return None if isinstance(value, float) and not math.isfinite(value) else value


def read_jsonl(path: str) -> list[dict]:
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


class MetricWriter:
  def __init__(self, workdir: str, *, resume_step: int = 0):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
    atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(self.path, "a")
    self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: dict, *, prefix: str = "") -> dict:
    row = {"step": int(step), **{f"{prefix}{k}": _jsonable(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    for k, v in row.items():
      if k != "step" and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, step)
    return row

  def close(self):
    self._file.close()
    self._tb.close()


def write_config(workdir: str, config) -> None:
  os.makedirs(workdir, exist_ok=True)
  atomic_write(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True))
