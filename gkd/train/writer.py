"""Run outputs: the config, metrics.jsonl and TensorBoard events (see gkd.rundir).

After a resume, rows logged past the restored checkpoint are dropped (and TensorBoard is told
to purge them), and so are the `eval/` rows at the restored step when the resumed run repeats
that evaluation (the final one, after a kill during the final eval or export). So a
killed-and-resumed run leaves the same metrics as an uninterrupted one, with no duplicate rows.
"""

import json
import math
import os

import numpy as np
from tensorboardX import SummaryWriter

from gkd.rundir import CONFIG, METRICS, TENSORBOARD, atomic_write, read_jsonl


def _jsonable(value):
  value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricWriter:
  """metrics.jsonl and TensorBoard events of one run.

  Only the primary process writes (`primary=False` makes every call a no-op): all processes
  log the same replicated metrics, and several writers on one workdir race, each rewriting
  metrics.jsonl on resume and creating the TensorBoard directory (a check-then-create that
  fails in the process that loses).
  """

  def __init__(self, workdir: str, *, resume_step: int = 0, redo_eval: bool = False,
               primary: bool = True):
    self.primary = primary
    if not primary:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, METRICS)

    def keep(row):
      step = row.get("step", 0)
      is_eval = any(k.startswith("eval/") for k in row)
      return step < resume_step or (step == resume_step and not (redo_eval and is_eval))

    kept = [r for r in read_jsonl(self.path) if keep(r)]
    atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(self.path, "a")
    self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD), purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: dict, *, prefix: str = "") -> dict:
    row = {"step": int(step), **{f"{prefix}{k}": _jsonable(v) for k, v in metrics.items()}}
    if not self.primary:
      return row
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    for k, v in row.items():
      if k != "step" and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, step)
    return row

  def close(self):
    if not self.primary:
      return
    self._file.close()
    self._tb.close()


def write_config(workdir: str, config) -> None:
  os.makedirs(workdir, exist_ok=True)
  atomic_write(os.path.join(workdir, CONFIG), config.to_json_best_effort(indent=2, sort_keys=True))
