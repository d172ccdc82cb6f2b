"""Bootstrap intervals against closed forms, limits and simulated coverage."""

import numpy as np
import pytest

from gkd.eval import stats


def test_large_binomial_sample_matches_the_normal_approximation():
  rng = np.random.default_rng(1)
  x = (rng.random(4000) < 0.3).astype(float)
  ci = stats.mean_ci(x, seed=0)
  p, n = x.mean(), x.size
  wald = 1.959964 * np.sqrt(p * (1 - p) / n)
  assert ci.mean == pytest.approx(p)
  assert ci.half_width == pytest.approx(wald, rel=0.06)
  assert ci.low == pytest.approx(p - wald, abs=0.003)
  assert ci.high == pytest.approx(p + wald, abs=0.003)
  assert (ci.num_seeds, ci.num_examples) == (1, 4000)


def test_joint_seed_and_example_resampling_matches_the_additive_closed_form():
  # x[s, e] = a_s + b_e: a resample's mean is mean*(a) + mean*(b) with independent draws, so its
  # variance is var(a)/S + var(b)/N (population variances).
  rng = np.random.default_rng(2)
  a, b = rng.normal(0, 0.05, 8), rng.normal(0, 0.5, 3000)
  ci = stats.mean_ci(a[:, None] + b[None, :], num_resamples=20_000, seed=3)
  sd = np.sqrt(a.var() / a.size + b.var() / b.size)
  assert ci.half_width == pytest.approx(1.959964 * sd, rel=0.06)
  examples_only = stats.mean_ci(b)  # seed noise widens the interval
  assert ci.half_width > examples_only.half_width * 1.2


def test_constant_sample_has_zero_width_and_a_single_value_has_no_interval():
  ci = stats.mean_ci(np.full((5, 300), 0.25))
  assert ci.low == ci.high == ci.mean == 0.25 and ci.half_width == 0
  single = stats.mean_ci([0.4])
  assert single.mean == 0.4 and np.isnan(single.low) and np.isnan(single.high)
  assert not single.excludes_zero


def test_paired_difference_of_identical_runs_is_exactly_zero():
  x = (np.random.default_rng(4).random((5, 1000)) < 0.4).astype(float)
  d = stats.paired_difference_ci(x, x.copy())
  assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0) and not d.excludes_zero
  shifted = stats.paired_difference_ci(x + 0.1, x)  # a constant shift is known exactly
  assert shifted.low == pytest.approx(0.1) and shifted.high == pytest.approx(0.1)


def test_pairing_removes_shared_example_difficulty():
  rng = np.random.default_rng(5)
  difficulty = rng.random(2000)
  a = (rng.random((5, 2000)) < difficulty + 0.05).astype(float)
  b = (rng.random((5, 2000)) < difficulty).astype(float)
  paired = stats.paired_difference_ci(a, b)
  unpaired_width = stats.mean_ci(a).half_width + stats.mean_ci(b).half_width
  assert paired.mean == pytest.approx(a.mean() - b.mean())
  assert paired.half_width < 0.8 * unpaired_width
  assert paired.excludes_zero


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
  rng = np.random.default_rng(6)
  trials, hits = 400, 0
  for t in range(trials):
    x = (rng.random(300) < 0.3).astype(float)
    ci = stats.mean_ci(x, num_resamples=1000, seed=t)
    hits += ci.low <= 0.3 <= ci.high
  # Binomial s.e. of the coverage estimate is ~0.011; percentile intervals undercover slightly.
  assert 0.91 <= hits / trials <= 0.98


def test_deterministic_given_the_seed():
  x = np.random.default_rng(7).normal(size=(3, 500))
  assert stats.mean_ci(x, seed=11) == stats.mean_ci(x, seed=11)
  assert stats.mean_ci(x, seed=11) != stats.mean_ci(x, seed=12)


@pytest.mark.parametrize("call, message", [
    (lambda: stats.mean_ci([]), "non-empty"),
    (lambda: stats.mean_ci([1.0, np.nan]), "NaN"),
    (lambda: stats.mean_ci(np.zeros((2, 2, 2))), "matrix"),
    (lambda: stats.mean_ci([1.0, 2.0], confidence=1.5), "confidence"),
    (lambda: stats.mean_ci([1.0, 2.0], num_resamples=0), "num_resamples"),
    (lambda: stats.paired_difference_ci(np.zeros((2, 3)), np.zeros((3, 3))), "same seeds"),
])
def test_bad_input_fails_clearly(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# --- sweep summaries (gkd.eval.summary) on synthetic sweep directories ---

def _point(tmp_path, overrides, accuracy, *, per_example=True, status="done"):
  """A results row; writes points/NAME/eval_examples.jsonl like the evaluator does."""
  import json
  from gkd import sweep
  name = sweep.point_name(overrides)
  row = {"point": name, "overrides": overrides, "status": status}
  if status != "done":
    return {**row, "error": "boom"}
  acc = np.asarray(accuracy, dtype=float)
  if per_example:
    d = tmp_path / "points" / name
    d.mkdir(parents=True)
    (d / "eval_examples.jsonl").write_text("".join(
        json.dumps({"example_id": i, "accuracy": int(a), "completion": "x"}) + "\n"
        for i, a in enumerate(acc)))
  return {**row, "metrics": {"accuracy": float(acc.mean()), "num_examples": acc.size,
                             "forward_kl": 0.1 + 0.01 * overrides["seed"]}}


def test_summary_carries_bootstrap_cis_and_paired_differences(tmp_path):
  from gkd.eval import summary
  rng = np.random.default_rng(0)
  base = {s: (rng.random(400) < 0.3) for s in range(3)}
  rows = [_point(tmp_path, {"mode": "sft", "seed": s}, base[s]) for s in range(3)]
  rows += [_point(tmp_path, {"objective.divergence": "forward_kl", "mix.student": 1.0, "seed": s},
                  np.ones(400)) for s in range(3)]
  rows += [_point(tmp_path, {"objective.divergence": "reverse_kl", "mix.student": 1.0, "seed": s},
                  base[s]) for s in range(2)]
  failed = {"objective.divergence": "reverse_kl", "mix.student": 1.0, "seed": 2}
  rows.append(_point(tmp_path, failed, None, status="failed"))
  out = summary.build(rows, str(tmp_path))
  md = out["summary.md"].splitlines()
  ci = stats.mean_ci(np.array([base[s] for s in range(3)], dtype=float),
                     num_resamples=summary.NUM_RESAMPLES)
  assert md[4] == ("| method | λ | mode | divergence | student | seeds | failed | n | accuracy "
                   "| forward_kl |")
  cell = f"{ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}]"
  assert md[6].startswith(f"| SFT | 0 | sft |  |  | 3 | 0 | 400 | {cell} |")
  assert "| RKL | 1 |  | reverse_kl | 1.0 | 2 | 1 | 400 |" in out["summary.md"]
  # Against the baseline: all-correct is +(1 − p) with no uncertainty left but the baseline's;
  # identical per-example results on the shared seeds differ by exactly 0.
  diffs = out["summary.md"].split("## Paired differences vs SFT (λ=0)")[1]
  assert "| RKL | 1 |  | reverse_kl | 1.0 | 2 | +0.000 [+0.000, +0.000] |" in diffs
  fkl = [line for line in diffs.splitlines() if line.startswith("| FKL")][0]
  assert f"+{1 - ci.mean:.3f}" in fkl and fkl.count(" *") == 1  # accuracy differs; forward_kl equal
  csv = out["differences.csv"].splitlines()
  assert csv[0].startswith("method,λ,mode,divergence,student,seeds,accuracy_diff,accuracy_low,")
  assert csv[1].split(",")[-5:] == ["True", "0", "0", "0", "False"]


def test_unpaired_difference_matches_the_independent_closed_form():
  rng = np.random.default_rng(8)
  a, b = rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 2.0, 2000)
  d = stats.unpaired_difference_ci(a, b, num_resamples=20_000)
  assert d.mean == pytest.approx(a.mean() - b.mean())
  sd = np.sqrt(a.var() / a.size + b.var() / b.size)
  assert d.half_width == pytest.approx(1.959964 * sd, rel=0.06)


def test_summary_falls_back_to_binomial_and_seed_level_without_per_example_files(tmp_path):
  from gkd.eval import summary
  accs = (0.2, 0.3, 0.4)
  rows = [_point(tmp_path, {"mode": "sft", "seed": s}, np.full(10, a) < 1, per_example=False)
          for s, a in enumerate(accs)]
  for r, a in zip(rows, accs):
    r["metrics"].update(accuracy=a, num_examples=100)
  rows.append(_point(tmp_path, {"mode": "sft", "seed": 3}, np.arange(100) < 50))  # with a file
  values = summary.Values(str(tmp_path), rows)
  cis = summary.method_intervals(values, rows, ["accuracy", "forward_kl"])
  # accuracy: every seed at the coarsest shared level, rebuilt as k ones out of num_examples
  assert (cis["accuracy"].num_seeds, cis["accuracy"].num_examples) == (4, 100)
  assert cis["accuracy"].mean == pytest.approx(0.35) and cis["accuracy"].half_width > 0.03
  assert (cis["forward_kl"].num_seeds, cis["forward_kl"].num_examples) == (4, 1)  # run-level
  single = summary.build(rows[:1], str(tmp_path))["summary.md"]
  assert "| 0.200 [" in single and "| 0.100 |" in single  # one run-level value: no interval
  other = [_point(tmp_path, {"mode": "sft", "mix.teacher": 1.0, "seed": s}, np.arange(100) < 60)
           for s in range(4)]
  values = summary.Values(str(tmp_path), rows + other)
  diff = summary.paired_intervals(values, other, rows, ["accuracy"])["accuracy"]
  ref = stats.unpaired_difference_ci(np.arange(100)[None].repeat(4, 0) < 60,
                                     np.array([np.arange(100) < k for k in (20, 30, 40, 50)]),
                                     num_resamples=summary.NUM_RESAMPLES)
  assert diff == ref  # no example identity on one side: never paired


def test_summary_csvs_quote_values_that_hold_a_comma(tmp_path):
  # A layer map "0:1,1:3" is one cell: a CSV reader must see the same columns in every row.
  import csv
  from gkd.eval import summary
  rows = [_point(tmp_path, {"mode": "sft", "seed": 0}, np.arange(10) < 5),
          _point(tmp_path, {"objective.layer_map": "0:1,1:3", "seed": 0}, np.arange(10) < 6)]
  out = summary.build(rows, str(tmp_path))
  for name in ("summary.csv", "differences.csv"):
    table = list(csv.DictReader(out[name].splitlines()))
    assert table[-1]["layer_map"] == "0:1,1:3" and None not in table[-1], name
  assert list(csv.DictReader(out["differences.csv"].splitlines()))[0]["accuracy_diff"] == "0.1"


def test_detectable_effect_is_2_8_standard_errors_of_a_95_percent_interval():
  ci = stats.Interval(0.01, 0.01 - 0.0196, 0.01 + 0.0196, num_seeds=3, num_examples=1000)
  assert stats.standard_error(ci) == pytest.approx(0.0196 / 1.959964)
  assert stats.detectable_effect(ci) == pytest.approx((1.959964 + 0.841621) * 0.0196 / 1.959964)
  # A plain binomial proportion: the interval's SE is the closed form sqrt(p(1 - p) / n).
  x = (np.random.default_rng(4).random(4000) < 0.3).astype(float)
  se = np.sqrt(x.mean() * (1 - x.mean()) / x.size)
  assert stats.detectable_effect(stats.mean_ci(x)) == pytest.approx(2.801585 * se, rel=0.06)
