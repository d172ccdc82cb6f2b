"""gkd.eval.compare: a sweep's points found by their arm's method names, paired comparisons
against NumPy, and the plan's reading of an interval."""

import json
import os

import numpy as np
import pytest

from gkd.eval import compare, stats
from tests.helpers import ROOT

METHODS = {
    "sft": {"train.mode": "sft", "mix.dataset": 1.0},
    "gkd_jsd0.9": {"objective.divergence": "generalized_jsd", "objective.divergence_kw": {"beta": 0.9},
                   "mix.student": 1.0},
}


def write_sweep(root, points):
  """points: (overrides, status, {example_id: accuracy}) -> a sweep dir like gkd.sweep's."""
  with open(os.path.join(root, "results.jsonl"), "w") as f:
    for i, (overrides, status, accuracies) in enumerate(points):
      name = f"p{i}"
      f.write(json.dumps({"point": name, "overrides": overrides, "status": status}) + "\n")
      os.makedirs(os.path.join(root, "points", name))
      with open(os.path.join(root, "points", name, "eval_examples.jsonl"), "w") as g:
        g.writelines(json.dumps({"example_id": k, "accuracy": v}) + "\n"
                     for k, v in accuracies.items())
  return str(root)


def test_a_method_is_found_whatever_the_seed_and_the_spelling_of_nested_keys():
  jsd = METHODS["gkd_jsd0.9"]
  flat = {"objective.divergence": "generalized_jsd", "objective.divergence_kw.beta": 0.9,
          "mix.student": 1.0, "seed": 4}
  assert compare.method_key(flat) == compare.method_key({**jsd, "seed": 0})
  assert compare.method_names(METHODS)[compare.method_key(flat)] == "gkd_jsd0.9"
  assert compare.method_key({**jsd, "mix.student": 0.5}) not in compare.method_names(METHODS)


def test_finished_points_keep_done_points_of_named_methods_in_order(tmp_path):
  sweep = write_sweep(tmp_path, [
      ({**METHODS["sft"], "seed": 0}, "done", {0: 1.0}),
      ({**METHODS["gkd_jsd0.9"], "seed": 0}, "failed", {0: 1.0}),
      ({"mix.student": 0.25, "seed": 0}, "done", {0: 1.0}),  # no method of the arm
      ({**METHODS["gkd_jsd0.9"], "seed": 1}, "done", {0: 0.0}),
  ])
  got = [(name, seed, row["point"]) for name, seed, row in compare.finished_points(sweep, METHODS)]
  assert got == [("sft", 0, "p0"), ("gkd_jsd0.9", 1, "p3")]


def test_per_example_orders_by_example_id_and_pairs_like_numpy(tmp_path):
  rng = np.random.default_rng(0)
  a = (rng.random((3, 50)) < 0.6).astype(float)
  b = (rng.random((3, 50)) < 0.4).astype(float)
  order = rng.permutation(50)  # rows written shuffled: the reader must sort them back
  points = [({**METHODS[m], "seed": s}, "done", {int(k): float(x[s, k]) for k in order})
            for s in range(3) for m, x in (("sft", b), ("gkd_jsd0.9", a))]
  points = [p for p in points if p[0] != {**METHODS["sft"], "seed": 2}]  # sft lacks seed 2
  runs = compare.per_example(write_sweep(tmp_path, points), METHODS)
  np.testing.assert_array_equal(runs["gkd_jsd0.9"][2], a[2])
  c = compare.paired(runs, "gkd_jsd0.9", "sft", strict_confidence=0.99)
  assert c.seeds == (0, 1)
  assert c.nominal.mean == pytest.approx(a[:2].mean() - b[:2].mean())
  assert c.discordance == pytest.approx(np.mean(a[:2] != b[:2]))
  expected = stats.paired_difference_ci(a[:2], b[:2], confidence=0.99)
  assert (c.strict.low, c.strict.high) == (expected.low, expected.high)
  assert c.strict.low <= c.nominal.low and c.nominal.high <= c.strict.high
  assert str(c).startswith(f"gkd_jsd0.9 - sft (2 seeds): {c.nominal.mean:+.4f} [")
  assert compare.paired(runs, "gkd_jsd0.9", "seq_kd", strict_confidence=0.99) is None
  assert compare.describe(runs, "seq_kd", "sft", strict_confidence=0.99) == (
      "seq_kd - sft: no common seeds")


def test_a_point_without_per_example_rows_is_named(tmp_path):
  sweep = write_sweep(tmp_path, [({**METHODS["sft"], "seed": 0}, "done", {0: 1.0})])
  os.remove(os.path.join(sweep, "points", "p0", "eval_examples.jsonl"))
  with pytest.raises(FileNotFoundError, match="point p0 has no per-example eval rows"):
    compare.per_example(sweep, METHODS)


@pytest.mark.parametrize("low, high, expected", [
    (0.01, 0.05, "supported (above 0)"),
    (0.005, 0.02, "supported (above 0), and against an effect of +0.030 or more"),
    (-0.02, 0.01, "against (entirely below +0.030)"),
    (-0.06, -0.01, "against (entirely below +0.030)"),
    (-0.01, 0.04, "inconclusive"),
    (-0.01, 0.03, "inconclusive"),  # reaching the margin does not rule it out
])
def test_verdict_reads_an_interval_against_zero_and_the_margin(low, high, expected):
  interval = stats.Interval((low + high) / 2, low, high, num_seeds=3, num_examples=1000)
  assert compare.verdict(interval, margin=0.03) == expected


def test_without_a_family_wise_level_the_line_has_no_bonferroni_interval(tmp_path):
  points = [({**METHODS[m], "seed": 0}, "done", {0: x, 1: 1.0}) for m, x in (("sft", 0.0),
                                                                             ("gkd_jsd0.9", 1.0))]
  runs = compare.per_example(write_sweep(tmp_path, points), METHODS)
  c = compare.paired(runs, "gkd_jsd0.9", "sft")
  assert c.strict is None and c.discordance == 0.5
  assert str(c) == (f"gkd_jsd0.9 - sft (1 seeds): +0.5000 [{c.nominal.low:+.4f}, "
                    f"{c.nominal.high:+.4f}], discordance 0.500")


def test_a_metric_some_points_lack_leaves_those_points_out(tmp_path):
  sweep = write_sweep(tmp_path, [({**METHODS["sft"], "seed": 0}, "done", {0: 1.0})])
  assert compare.per_example(sweep, METHODS, metric="teacher_nll") == {}


def test_load_config_keeps_the_configs_argument():
  arm2 = os.path.join(ROOT, "configs", "arm2_smollm2.py")
  config, _ = compare.load_config(arm2 + ":every=5", "stage=gkd")
  assert config.student.path == "runs/arm2_smollm2/student_every5/export"
  config, _ = compare.load_config(arm2, "stage=gkd,student=y")
  assert config.student.path == "y"


def test_rerun_difference_pairs_a_point_run_again_with_the_sweeps_own(tmp_path):
  rng = np.random.default_rng(1)
  first = (rng.random(40) < 0.5).astype(float)
  again = first.copy()
  again[:6] = 1.0 - again[:6]  # six examples flip
  os.makedirs(tmp_path / "sweep")
  sweep = write_sweep(tmp_path / "sweep", [
      ({**METHODS["gkd_jsd0.9"], "seed": 0}, "done", dict(enumerate(first)))])
  check = tmp_path / "check"
  os.makedirs(check)
  runs = compare.per_example(sweep, METHODS)
  what = "retrained export minus first"
  missing = str(check / "missing")
  assert compare.rerun_difference(missing, runs, METHODS, "gkd_jsd0.9", 0, what) is None
  write_sweep(check, [({**METHODS["gkd_jsd0.9"], "seed": 0}, "done", dict(enumerate(again)))])
  assert compare.rerun_difference(str(check), runs, METHODS, "gkd_jsd0.9", 1, what) is None
  line = compare.rerun_difference(str(check), runs, METHODS, "gkd_jsd0.9", 0, what)
  d = stats.paired_difference_ci(again[None], first[None])
  assert line == (f"gkd_jsd0.9 seed 0, {what}: accuracy {again.mean():.4f} vs {first.mean():.4f}, "
                  f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], discordance 0.150")
