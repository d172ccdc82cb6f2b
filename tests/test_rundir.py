"""Reading run files in the forms results are committed in: gzipped JSON lines and per-example
rows packed into one Parquet table per collected directory."""

import gzip
import json
import math

import pytest

from gkd import rundir


def _write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# Rows as the evaluator writes them: runs with different metrics, unicode, NaN, exact floats.
POINT_A = [{"example_id": 0, "completion": "1+5=6. Answer: 6", "accuracy": 1.0,
            "forward_kl": 0.0003233545131104834, "nll": 4.5565371264648787e-05},
           {"example_id": 1, "completion": "Heauen, heauen —", "accuracy": 0.0,
            "forward_kl": float("nan"), "nll": 1e-300}]
POINT_B = [{"example_id": 0, "completion": "1+5=6. Answer: 6", "accuracy": 1.0, "nll": 0.1,
            "rougeL": 0.25}]


def test_read_jsonl_reads_the_gzipped_copy_when_the_plain_file_is_absent(tmp_path):
  rows = [{"step": 1, "loss": 0.5}, {"step": 2, "eval/accuracy": 0.25}]
  with gzip.open(tmp_path / "metrics.jsonl.gz", "wt") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
  assert rundir.read_jsonl(str(tmp_path / "metrics.jsonl")) == rows
  _write_jsonl(tmp_path / "metrics.jsonl", rows[:1])  # a run's own plain file wins
  assert rundir.read_jsonl(str(tmp_path / "metrics.jsonl")) == rows[:1]
  assert rundir.read_jsonl(str(tmp_path / "absent.jsonl")) == []


def test_packed_rows_read_back_exactly_and_the_plain_files_are_removed(tmp_path):
  sweep = tmp_path / "sweep"
  _write_jsonl(sweep / "points" / "a,seed=0" / rundir.EVAL_EXAMPLES, POINT_A)
  _write_jsonl(sweep / "points" / "b,seed=0" / rundir.EVAL_EXAMPLES, POINT_B)
  (sweep / "points" / "c,seed=0").mkdir()  # a failed point: no rows
  assert rundir.pack_examples(str(sweep)) == ["points/a,seed=0", "points/b,seed=0"]
  assert not list(sweep.rglob(rundir.EVAL_EXAMPLES))
  a = rundir.read_examples(str(sweep / "points" / "a,seed=0"))
  assert json.dumps(a) == json.dumps(POINT_A)  # every float bit for bit, NaN included
  assert math.isnan(a[1]["forward_kl"])
  assert rundir.read_examples(str(sweep / "points" / "b,seed=0")) == POINT_B  # no null keys
  assert rundir.read_examples(str(sweep / "points" / "c,seed=0")) is None
  assert rundir.read_examples(str(tmp_path / "elsewhere")) is None


def test_packing_again_merges_new_runs_and_replaces_repacked_ones(tmp_path):
  # collect.sh copies a running sweep's finished points more than once.
  _write_jsonl(tmp_path / "points" / "a" / rundir.EVAL_EXAMPLES, POINT_A)
  rundir.pack_examples(str(tmp_path))
  _write_jsonl(tmp_path / "points" / "b" / rundir.EVAL_EXAMPLES, POINT_B)
  _write_jsonl(tmp_path / "points" / "a" / rundir.EVAL_EXAMPLES, POINT_B)
  assert rundir.pack_examples(str(tmp_path)) == ["points/a", "points/b"]
  assert rundir.read_examples(str(tmp_path / "points" / "a")) == POINT_B
  assert rundir.read_examples(str(tmp_path / "points" / "b")) == POINT_B
  assert rundir.pack_examples(str(tmp_path)) == []  # nothing new


def test_a_run_keeps_reading_its_own_file_and_a_table_can_hold_a_single_run(tmp_path):
  _write_jsonl(tmp_path / "run" / rundir.EVAL_EXAMPLES, POINT_B)
  assert rundir.read_examples(str(tmp_path / "run")) == POINT_B
  rundir.pack_examples(str(tmp_path / "run"))  # the run's own directory: its key is "."
  assert (tmp_path / "run" / rundir.EXAMPLES_TABLE).exists()
  assert rundir.read_examples(str(tmp_path / "run")) == POINT_B


def test_rows_a_table_cannot_hold_exactly_are_refused_and_left_in_place(tmp_path):
  _write_jsonl(tmp_path / "a" / rundir.EVAL_EXAMPLES, [{"example_id": 0, "nll": None}])
  with pytest.raises(ValueError, match="null for 'nll'"):
    rundir.pack_examples(str(tmp_path))
  _write_jsonl(tmp_path / "a" / rundir.EVAL_EXAMPLES, [{"example_id": 0, "nll": 1},
                                                        {"example_id": 1, "nll": 0.5}])
  with pytest.raises(ValueError, match="does not read back"):  # 1 would come back as 1.0
    rundir.pack_examples(str(tmp_path))
  assert (tmp_path / "a" / rundir.EVAL_EXAMPLES).exists()
  assert not list(tmp_path.glob("*.parquet*"))


def test_collect_copies_a_sweep_into_the_repo_packed(tmp_path):
  """experiments/results/collect.sh: small files copied, logs gzipped, per-example rows packed,
  and every reader still finds them; collecting again adds new points."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  src, dst = tmp_path / "runs" / "sweep", tmp_path / "repo" / "sweep"
  point = src / "points" / "a,seed=0"
  _write_jsonl(point / rundir.EVAL_EXAMPLES, POINT_A)
  _write_jsonl(point / rundir.METRICS, [{"step": 1, "loss": 0.5}])
  (point / "checkpoints").mkdir()
  (point / "checkpoints" / "big").write_text("x")
  _write_jsonl(src / "results.jsonl", [{"point": "a,seed=0"}])

  def collect():
    subprocess.run(["bash", os.path.join(root, "experiments", "results", "collect.sh"), str(src),
                    str(dst)], cwd=root, env={**os.environ, "PY": sys.executable}, check=True)
  collect()
  copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
  assert copied == [rundir.EXAMPLES_TABLE, "points/a,seed=0/metrics.jsonl.gz", "results.jsonl"]
  assert json.dumps(rundir.read_examples(str(dst / "points" / "a,seed=0"))) == json.dumps(POINT_A)
  assert rundir.read_jsonl(str(dst / "points" / "a,seed=0" / rundir.METRICS)) == [
      {"step": 1, "loss": 0.5}]
  _write_jsonl(src / "points" / "b,seed=0" / rundir.EVAL_EXAMPLES, POINT_B)
  collect()
  assert rundir.read_examples(str(dst / "points" / "b,seed=0")) == POINT_B
  assert json.dumps(rundir.read_examples(str(dst / "points" / "a,seed=0"))) == json.dumps(POINT_A)
