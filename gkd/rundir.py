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

Results committed to the repository are stored smaller (experiments/results/collect.sh): a
`X.jsonl` may be kept as `X.jsonl.gz`, and the per-example rows of every run under a collected
directory are packed into one Parquet table at its top, `eval_examples.parquet`, keyed by the
run's path relative to that directory. The points of a sweep evaluate the same examples, so one
table stores their completions once, and its float columns are stored exactly. `read_jsonl` and
`read_examples` read either form, so no reader needs to know which one it was given.
"""

import contextlib
import fcntl
import functools
import gzip
import json
import os
import re
import shutil

from gkd.errors import UserError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
EVAL_EXAMPLES = "eval_examples.jsonl"
EXAMPLES_TABLE = "eval_examples.parquet"
FINAL_METRICS = "final_metrics.json"
EXPORT = "export"
LOCK = ".lock"
_TMP = re.compile(r".+\.tmp\.\d+$")


class WorkdirError(UserError, RuntimeError):
  """The workdir cannot be used (not a directory, not writable, written for another config)."""


class WorkdirBusy(WorkdirError):
  """Another live process holds the workdir's lock."""


@contextlib.contextmanager
def lock(workdir: str):
  """Holds an exclusive flock on WORKDIR/.lock, so two processes never run one workdir at once.

  The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock file
  never blocks a resume.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    if not os.access(workdir, os.W_OK):
      raise PermissionError(13, "permission denied")
    f = open(os.path.join(workdir, LOCK), "a+")
  except OSError as e:
    raise WorkdirError(f"--workdir={workdir}: cannot write there ({e.strerror or e}); pass a "
                       "writable directory.") from None
  with f:
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
  """The rows of a JSON-lines file, or of its gzipped copy `path.gz` when `path` is absent ([]
  when neither exists), up to a last line cut short by a kill."""
  if not os.path.exists(path):
    if not os.path.exists(path + ".gz"):
      return []
    path += ".gz"
  rows = []
  with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut short by a kill: the resumed run rewrites it
        break
  return rows


def read_examples(run_dir: str) -> list[dict] | None:
  """A run's per-example eval rows (None when it has none): its own eval_examples.jsonl (or .gz),
  else its rows in the nearest packed table in it or above it (see `pack_examples`)."""
  own = os.path.join(run_dir, EVAL_EXAMPLES)
  if os.path.exists(own) or os.path.exists(own + ".gz"):
    return read_jsonl(own)
  root = os.path.abspath(run_dir)
  while True:
    table = os.path.join(root, EXAMPLES_TABLE)
    if os.path.exists(table):
      stat = os.stat(table)
      rows = _table_runs(table, stat.st_mtime_ns, stat.st_size).get(
          os.path.relpath(os.path.abspath(run_dir), root))
      return None if rows is None else [dict(r) for r in rows]
    if os.path.dirname(root) == root:
      return None
    root = os.path.dirname(root)


@functools.lru_cache(maxsize=2)  # a summary reads every point of a sweep from one table
def _table_runs(path: str, mtime_ns: int, size: int) -> dict[str, list[dict]]:
  """{run: rows} of a packed table; a row has the keys its run wrote (nulls are absent keys)."""
  import pyarrow.parquet as pq  # only readers of packed results need it
  del mtime_ns, size  # part of the cache key: a rewritten table is read again
  runs: dict[str, list[dict]] = {}
  for row in pq.read_table(path).to_pylist():
    runs.setdefault(row.pop("run"), []).append({k: v for k, v in row.items() if v is not None})
  return runs


def pack_examples(root: str) -> list[str]:
  """Moves the per-example rows of every run under `root` (each `eval_examples.jsonl`) into the
  table `root/eval_examples.parquet`, merged with the runs already in it (a run packed again
  replaces its rows); returns the runs packed. The table is checked to read back exactly the
  rows it was given before the JSON-lines files are removed."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  sources = {}
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    if EVAL_EXAMPLES in files:
      path = os.path.join(folder, EVAL_EXAMPLES)
      sources[os.path.relpath(folder, root)] = read_jsonl(path)
  if not sources:
    return []
  table_path = os.path.join(root, EXAMPLES_TABLE)
  runs = {}
  if os.path.exists(table_path):
    stat = os.stat(table_path)
    runs = dict(_table_runs(table_path, stat.st_mtime_ns, stat.st_size))
  runs.update(sources)
  keys = list(dict.fromkeys(k for rows in runs.values() for r in rows for k in r))
  if "run" in keys:
    raise ValueError(f"{root}: a per-example row has a 'run' key, the packed table's own column.")
  rows = [(run, r) for run in sorted(runs) for r in runs[run]]
  columns = {"run": pa.array([run for run, _ in rows], pa.string())}
  for k in keys:
    if any(k in r and r[k] is None for _, r in rows):
      raise ValueError(f"{root}: a per-example row holds null for {k!r}; a packed table reads "
                       "null back as an absent key.")
    columns[k] = pa.array([r.get(k) for _, r in rows])
  strings = [k for k, c in columns.items() if pa.types.is_string(c.type)]
  tmp = f"{table_path}.tmp.{os.getpid()}"
  pq.write_table(pa.table(columns), tmp, compression="zstd", compression_level=19,
                 use_dictionary=strings, write_statistics=False)
  stat = os.stat(tmp)
  if _exact(_table_runs(tmp, stat.st_mtime_ns, stat.st_size)) != _exact(runs):
    os.remove(tmp)
    raise ValueError(f"{root}: the packed table does not read back the rows it was given.")
  os.replace(tmp, table_path)
  for run in sources:
    os.remove(os.path.join(root, run, EVAL_EXAMPLES))
  return sorted(sources)


def _exact(runs: dict) -> str:
  """The runs' rows as text that two copies share only when every value is the same (floats
  written by repr, which round-trips; NaN equal to NaN; 1 and 1.0 told apart)."""
  return json.dumps(runs, sort_keys=True)
