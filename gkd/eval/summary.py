"""A sweep's summary tables: mean and 95% CI per method, and paired differences to a baseline.

A sweep directory holds results.jsonl (one row per point: overrides, status, final metrics) and
points/NAME/ per point. When a point's final eval wrote points/NAME/eval_examples.jsonl (one row
per evaluated example: "example_id", per-example metrics such as "accuracy" or "rougeL", and
"completion"), its metrics are bootstrapped over seeds *and* examples; otherwise (run-level
metrics only, e.g. forward_kl, or older results) over seeds alone. See gkd.eval.stats.

Points are grouped by their overrides without "seed". The baseline of the paired table is the
first group in sweep order, so a sweep lists its reference method (SFT, say) first.
"""

import collections
import os

import numpy as np

from gkd.eval import stats
from gkd.train.writer import read_jsonl

SUMMARY_METRICS = ("accuracy", "rougeL", "forward_kl", "reverse_kl", "nll",
                   "teacher_logprob_of_samples", "distinct_2")
EXAMPLES_FILE = "eval_examples.jsonl"
LAMBDA_KEY = "mix.student"
NUM_RESAMPLES = 2000  # the summary is rebuilt after every point: keep it to a second or so
_RUN_LEVEL = -1  # the pseudo example id of a run-level value


def method_label(overrides: dict) -> str:
  """'JSD(0.5)', 'FKL', 'SeqKD', 'SFT', ... from a point's overrides (the default config's
  divergence is generalized_jsd with β=0.5; λ is shown separately)."""
  if overrides.get("mode") == "sft":
    return "SFT"
  if float(overrides.get("mix.teacher", 0.0)) > 0:
    return "SeqKD"
  div = overrides.get("objective.divergence", "generalized_jsd")
  if div == "generalized_jsd":
    kw = overrides.get("objective.divergence_kw") or {}
    beta = overrides.get("objective.divergence_kw.beta", kw.get("beta",
                         overrides.get("objective.beta", 0.5)))
    return f"JSD({beta})"
  return {"forward_kl": "FKL", "reverse_kl": "RKL", "skew_kl": "SKL", "skew_reverse_kl": "SRKL",
          "total_variation": "TV"}.get(div, div)


def group_rows(rows: list[dict]) -> dict[tuple, list[dict]]:
  """{overrides without seed (as a tuple of items): rows}, in first-seen order."""
  groups = collections.defaultdict(list)
  for r in rows:
    groups[tuple((k, v) for k, v in r["overrides"].items() if k != "seed")].append(r)
  return dict(groups)


def point_examples(sweep_dir: str, row: dict) -> list[dict] | None:
  """The point's per-example eval rows, or None when it wrote none."""
  path = os.path.join(sweep_dir, "points", row["point"], EXAMPLES_FILE)
  return read_jsonl(path) if os.path.exists(path) else None


class Values:
  """Per-seed metric values of finished points, per example where the points have them."""

  def __init__(self, sweep_dir: str, rows: list[dict]):
    self._examples = {r["point"]: point_examples(sweep_dir, r) for r in rows
                      if r.get("status") == "done"}

  def per_seed(self, members, metric, *, per_example=True) -> dict[int, dict[int, float]]:
    """{seed: {example_id: value}}; one pseudo-example per seed when run-level."""
    out = {}
    for r in members:
      if r["point"] not in self._examples:
        continue
      examples = self._examples[r["point"]] if per_example else None
      if examples and metric in examples[0]:
        out[r["overrides"].get("seed", 0)] = {e["example_id"]: float(e[metric]) for e in examples}
      elif r["metrics"].get(metric) is not None:
        out[r["overrides"].get("seed", 0)] = {_RUN_LEVEL: float(r["metrics"][metric])}
    return out


def _matrix(per_seed: dict, seeds, ids) -> np.ndarray:
  return np.array([[per_seed[s][i] for i in ids] for s in seeds])


def _is_per_example(per_seed: dict) -> bool:
  return bool(per_seed) and all(_RUN_LEVEL not in v for v in per_seed.values())


def _aligned(per_seed: dict, seeds) -> tuple[list, list]:
  """Seeds and the example ids that every one of them has (all of them, normally)."""
  ids = set.intersection(*(set(per_seed[s]) for s in seeds)) if seeds else set()
  return list(seeds), sorted(ids)


def method_intervals(values: Values, members, metrics) -> dict[str, stats.Interval]:
  out = {}
  for m in metrics:
    per_seed = values.per_seed(members, m)
    if per_seed and not _is_per_example(per_seed):  # mixed: fall back to run-level for all
      per_seed = values.per_seed(members, m, per_example=False)
    seeds, ids = _aligned(per_seed, sorted(per_seed))
    if ids:
      out[m] = stats.mean_ci(_matrix(per_seed, seeds, ids), num_resamples=NUM_RESAMPLES)
  return out


def paired_intervals(values: Values, members, baseline, metrics) -> dict[str, stats.Interval]:
  """method − baseline on the seeds (and examples) both have."""
  out = {}
  for m in metrics:
    a, b = values.per_seed(members, m), values.per_seed(baseline, m)
    if not (_is_per_example(a) and _is_per_example(b)):
      a = values.per_seed(members, m, per_example=False)
      b = values.per_seed(baseline, m, per_example=False)
    seeds = sorted(set(a) & set(b))
    if not seeds:
      continue
    _, ids_a = _aligned(a, seeds)
    _, ids = _aligned(b, seeds)
    ids = sorted(set(ids_a) & set(ids))
    if ids:
      out[m] = stats.paired_difference_ci(_matrix(a, seeds, ids), _matrix(b, seeds, ids),
                                          num_resamples=NUM_RESAMPLES)
  return out


def _fmt(ci: stats.Interval | None, signed=False) -> str:
  if ci is None:
    return "–"
  f = "{:+.3f}" if signed else "{:.3f}"
  if np.isnan(ci.low):
    return f.format(ci.mean)
  return f"{f.format(ci.mean)} [{f.format(ci.low)}, {f.format(ci.high)}]"


def _csv(ci: stats.Interval | None) -> list[str]:
  return ["", "", ""] if ci is None else [f"{x:.6g}" for x in (ci.mean, ci.low, ci.high)]


def build(rows: list[dict], sweep_dir: str) -> dict[str, str]:
  """The text of summary.md, summary.csv and differences.csv for a sweep's results rows."""
  groups = group_rows(rows)
  values = Values(sweep_dir, rows)
  keys = list(dict.fromkeys(k for key in groups for k, _ in key))  # union, in first-seen order
  columns = ["method", "λ"] + [k.rsplit(".", 1)[-1] for k in keys]
  metrics = [m for m in SUMMARY_METRICS if any(m in r.get("metrics", {}) for r in rows)]

  def head(key, members):
    overrides = dict(key)
    return [method_label(overrides), f"{float(overrides.get(LAMBDA_KEY, 0.0)):g}"] + [
        str(overrides.get(k, "")) for k in keys]

  md = ["## Mean and 95% CI per method",
        "",
        "Percentile bootstrap over seeds and, where per-example results exist, over the evaluated "
        "examples jointly (n: examples per run).",
        "",
        "| " + " | ".join(columns + ["seeds", "failed", "n"] + metrics) + " |",
        "|" + "---|" * (len(columns) + 3 + len(metrics))]
  csv = [",".join(columns + ["seeds", "failed", "num_examples"]
                  + [f"{m}_{s}" for m in metrics for s in ("mean", "low", "high")])]
  for key, members in groups.items():
    done = [r for r in members if r["status"] == "done"]
    cis = method_intervals(values, done, metrics)
    n = max((ci.num_examples for ci in cis.values()), default=0)
    h = head(key, members) + [str(len(done)), str(len(members) - len(done)), str(n)]
    md.append("| " + " | ".join(h + [_fmt(cis.get(m)) for m in metrics]) + " |")
    csv.append(",".join(h + [x for m in metrics for x in _csv(cis.get(m))]))

  diff_csv = [",".join(columns + ["seeds"] + [f"{m}_{s}" for m in metrics
                                              for s in ("diff", "low", "high", "excludes_zero")])]
  if groups:
    (base_key, base_rows), *others = groups.items()
    base_done = [r for r in base_rows if r["status"] == "done"]
    md += ["", f"## Paired differences vs {method_label(dict(base_key))} "
               f"(λ={float(dict(base_key).get(LAMBDA_KEY, 0.0)):g})",
           "",
           "Method − baseline on the same seeds and examples, 95% CI; * marks a CI that excludes 0.",
           "",
           "| " + " | ".join(columns + ["seeds"] + metrics) + " |",
           "|" + "---|" * (len(columns) + 1 + len(metrics))]
    for key, members in others:
      done = [r for r in members if r["status"] == "done"]
      cis = paired_intervals(values, done, base_done, metrics)
      seeds = max((ci.num_seeds for ci in cis.values()), default=0)
      h = head(key, members) + [str(seeds)]
      cells = [_fmt(cis.get(m), signed=True) + (" *" if m in cis and cis[m].excludes_zero else "")
               for m in metrics]
      md.append("| " + " | ".join(h + cells) + " |")
      diff_csv.append(",".join(h + [x for m in metrics for x in (
          _csv(cis.get(m)) + [str(cis[m].excludes_zero) if m in cis else ""])]))
  return {"summary.md": "\n".join(md) + "\n", "summary.csv": "\n".join(csv) + "\n",
          "differences.csv": "\n".join(diff_csv) + "\n"}
