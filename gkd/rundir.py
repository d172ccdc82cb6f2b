"""The layout of a run directory, and the atomic writes that keep it consistent when killed.

WORKDIR/
  config.json           the resolved config
  metrics.jsonl         one JSON row per logged step (train and `eval/` metrics)
  tb/                   TensorBoard events of the same metrics
  checkpoints/          orbax checkpoints (train state, data-iterator state, teacher cache)
  eval_examples.jsonl   the final evaluation, one row per held-out example
  final_metrics.json    the final evaluation's metrics; its presence marks a finished run
  export/               the student in Hugging Face format (loadable with source="pretrained")
"""

import json
import os

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
EVAL_EXAMPLES = "eval_examples.jsonl"
FINAL_METRICS = "final_metrics.json"
EXPORT = "export"


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it: all or nothing."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


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
