"""experiments/rerun_check.py: a rerun is "same" only when every logged value but the wall-clock
ones equals the committed run's, whichever form (plain or gzipped) each run stores."""

import gzip
import json
import os
import subprocess
import sys

from tests import helpers

PATH = os.path.join(helpers.ROOT, "experiments", "rerun_check.py")
ROWS = [{"step": 0, "eval/nll": 1.9334276785402806, "eval/accuracy": 0.01},
        {"step": 10, "loss": 0.9049974679946899, "grad_norm": 3.46, "step_s": 7.7,
         "train_tokens_per_s": 87.8},
        {"step": 20, "loss": 0.5272088646888733, "grad_norm": 3.77, "step_s": 9.5,
         "train_tokens_per_s": 79.3},
        {"step": 20, "eval/nll": 0.13, "eval/accuracy": 0.85}]
FINAL = {"step": 20, "nll": 0.13, "accuracy": 0.85}


def write_run(folder, rows, final=None, gz=False):
  os.makedirs(folder, exist_ok=True)
  text = "".join(json.dumps(r) + "\n" for r in rows)
  if gz:
    with gzip.open(os.path.join(folder, "metrics.jsonl.gz"), "wt") as f:
      f.write(text)
  else:
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
      f.write(text)
  if final is not None:
    with open(os.path.join(folder, "final_metrics.json"), "w") as f:
      json.dump(final, f)
  return str(folder)


def check(rerun, committed):
  proc = subprocess.run([sys.executable, PATH, rerun, committed], capture_output=True, text=True,
                        cwd=helpers.ROOT, env={**os.environ, "PYTHONPATH": helpers.ROOT})
  return proc.returncode, proc.stdout.strip().splitlines(), proc.stderr.strip()


def test_equal_values_with_other_wall_clock_times_are_the_same_run(tmp_path):
  committed = write_run(tmp_path / "committed", ROWS, FINAL, gz=True)
  rerun = write_run(tmp_path / "rerun", [{**r, "step_s": 99.0} if "step_s" in r else r
                                         for r in ROWS], FINAL)
  code, lines, _ = check(rerun, committed)
  assert code == 0
  assert lines == ["same: 0 differing values over 3 of the committed run's 3 logged steps "
                   "(rerun finished)"]


def test_a_value_off_in_its_last_digit_is_named_with_its_step(tmp_path):
  committed = write_run(tmp_path / "committed", ROWS, FINAL, gz=True)
  rows = [dict(r) for r in ROWS]
  rows[0]["eval/nll"] = 1.9334276348043116
  code, lines, _ = check(write_run(tmp_path / "rerun", rows, FINAL), committed)
  assert code == 1
  assert lines[0] == ("step 0 eval/nll: rerun 1.9334276348043116, committed 1.9334276785402806")
  assert lines[-1].startswith("DIFFERENT: 1 differing values over 3 of")


def test_a_different_final_metric_or_a_missing_key_counts(tmp_path):
  committed = write_run(tmp_path / "committed", ROWS, FINAL, gz=True)
  rerun = write_run(tmp_path / "rerun", ROWS[:3], {"step": 20, "nll": 0.13, "accuracy": 0.855})
  code, lines, _ = check(rerun, committed)
  assert code == 1
  # Step 20's eval row is missing from the rerun: each of its two values counts, then the final.
  assert lines[:-1] == ["step 20 eval/accuracy: rerun None, committed 0.85",
                        "step 20 eval/nll: rerun None, committed 0.13",
                        "final accuracy: rerun 0.855, committed 0.85"]


def test_a_rerun_in_progress_is_compared_over_the_steps_it_has_logged(tmp_path):
  committed = write_run(tmp_path / "committed", ROWS, FINAL, gz=True)
  code, lines, _ = check(write_run(tmp_path / "rerun", ROWS[:2]), committed)
  assert code == 0
  assert lines == ["same: 0 differing values over 2 of the committed run's 3 logged steps "
                   "(rerun in progress)"]


def test_nothing_committed_to_compare_against_fails_in_one_line(tmp_path):
  rerun = write_run(tmp_path / "rerun", ROWS)
  code, _, err = check(rerun, str(tmp_path / "nowhere"))
  assert code == 1
  assert err == f"{tmp_path / 'nowhere'}: no metrics.jsonl(.gz) to compare against."
