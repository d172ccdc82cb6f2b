"""A sweep's summary tables: mean and 95% CI per method, and paired differences to a baseline.

A sweep directory holds results.jsonl (one row per point: overrides, status, final metrics) and
points/NAME/ per point. When a point's final eval wrote points/NAME/eval_examples.jsonl (one row
per evaluated example: "example_id", per-example metrics such as "accuracy" or "rougeL", and
"completion"; in committed results packed into the sweep's table, see gkd.rundir), its metrics
are bootstrapped over seeds *and* examples; otherwise (run-level
metrics only, e.g. forward_kl) over seeds alone; an accuracy without per-example results is
rebuilt from its num_examples (see Values). See gkd.eval.stats.

Points are grouped by their overrides without "seed". The baseline of the paired table is the
first group in sweep order, so a sweep lists its reference method (SFT, say) first.
"""

import collections
import csv
import io
import os

import numpy as np

from gkd.eval import stats
from gkd import divergences
from gkd.rundir import read_examples

SUMMARY_METRICS = ("accuracy", "rougeL", "forward_kl", "reverse_kl", "nll",
                   "teacher_logprob_of_samples", "distinct_2")
LAMBDA_KEY = "mix.student"
NUM_RESAMPLES = 2000  # the summary is rebuilt after every point: keep it to a second or so
_RUN_LEVEL = -1  # the pseudo example id of a run-level value
_LEVELS = ("run", "binomial", "examples")  # coarsest first
BINOMIAL_METRICS = ("accuracy",)  # a run-level mean of 0/1 outcomes over num_examples


def flat_overrides(overrides: dict) -> dict:
  """Dict values spelled as dotted keys: {"objective.divergence_kw": {"beta": 1}} ->
  {"objective.divergence_kw.beta": 1}; an empty dict sets nothing and is dropped. Points named
  and grouped this way match those of the older flat schema ("objective.beta")."""
  flat = {}
  for key, value in overrides.items():
    if isinstance(value, dict):
      flat.update(flat_overrides({f"{key}.{k}": v for k, v in value.items()}))
    else:
      flat[key] = value
  return flat


def method_label(overrides: dict) -> str:
  """'JSD(0.5)', 'FKL', 'SeqKD', 'SFT', ... from a point's overrides (the default config's
  divergence is generalized_jsd with β=0.5; λ is shown separately), with the methods after
  GKD appended: 'JSD(0.9) + SKD(K=1)', '+ replay', '+ layers', '+ RL(0.1)', '+ LoRA(r=8)',
  '+ store', 'RKL + sampled-token', 'JSD(0.9) + OPSD' (teacher.source='self')."""
  flat = flat_overrides(overrides)
  return _base_label(overrides, flat) + "".join(
      f" + {fmt(flat[key])}" for key, fmt in _ADDED_METHODS if flat.get(key))


_ADDED_METHODS = (("sampling.speculative_topk", lambda k: f"SKD(K={k})"),
                  ("mix.replay.capacity", lambda n: "replay"),
                  ("objective.layer_map", lambda m: "layers"),
                  ("objective.rl_weight", lambda w: f"RL({w})"),
                  ("lora.rank", lambda r: f"LoRA(r={r})"),
                  ("teacher_store", lambda path: "store"),
                  ("objective.estimator", lambda e: e.replace("_", "-")),
                  ("teacher.source", lambda s: {"self": "OPSD"}.get(s, s)))


def _base_label(overrides: dict, flat: dict) -> str:
  if overrides.get("mode") == "sft":
    return "SFT"
  if float(overrides.get("mix.teacher", 0.0)) > 0:
    return "SeqKD"
  div = flat.get("objective.divergence", "generalized_jsd")
  if div == "generalized_jsd":  # "objective.beta": the schema of the first committed results
    default = divergences.PARAMS[div]["beta"]
    return f"JSD({flat.get('objective.divergence_kw.beta', flat.get('objective.beta', default))})"
  return {"forward_kl": "FKL", "reverse_kl": "RKL", "skew_kl": "SKL", "skew_reverse_kl": "SRKL",
          "total_variation": "TV"}.get(div, div)


def group_rows(rows: list[dict]) -> dict[tuple, list[dict]]:
  """{overrides without seed (as a tuple of items): rows}, in first-seen order."""
  groups = collections.defaultdict(list)
  for r in rows:
    flat = flat_overrides(r["overrides"])
    groups[tuple((k, v) for k, v in flat.items() if k != "seed")].append(r)
  return dict(groups)


def point_examples(sweep_dir: str, row: dict) -> list[dict] | None:
  """The point's per-example eval rows, or None when it wrote none."""
  return read_examples(os.path.join(sweep_dir, "points", row["point"]))


class Values:
  """Per-seed metric values of finished points, at the finest level the points allow.

  Levels: "examples" (eval_examples.jsonl: pairable by example id); "binomial" (a run-level
  accuracy with its num_examples, rebuilt as k ones and n − k zeros: the right spread, but no
  example identity, so it is never paired); "run" (one value per seed).
  """

  def __init__(self, sweep_dir: str, rows: list[dict]):
    self._examples = {r["point"]: point_examples(sweep_dir, r) for r in rows
                      if r.get("status") == "done"}

  def _level(self, r, metric) -> str | None:
    examples = self._examples.get(r["point"])
    if examples and metric in examples[0]:
      return "examples"
    m = r.get("metrics", {})
    if m.get(metric) is None:
      return None
    return "binomial" if metric in BINOMIAL_METRICS and m.get("num_examples") else "run"

  def per_seed(self, members, metric) -> tuple[dict[int, dict[int, float]], str]:
    """({seed: {example_id: value}}, level): the coarsest level any member has, for all."""
    members = [r for r in members if r["point"] in self._examples]
    levels = [lv for lv in (self._level(r, metric) for r in members) if lv]
    if not levels:
      return {}, "run"
    level = min(levels, key=_LEVELS.index)
    out = {}
    for r in members:
      if self._level(r, metric) is None:
        continue
      seed, m = r["overrides"].get("seed", 0), r["metrics"]
      if level == "examples":
        out[seed] = {e["example_id"]: float(e[metric]) for e in self._examples[r["point"]]}
      elif level == "binomial":
        n = int(m["num_examples"])
        k = int(round(m[metric] * n))
        out[seed] = {i: float(i < k) for i in range(n)}
      else:
        out[seed] = {_RUN_LEVEL: float(m[metric])}
    return out, level


def _matrix(per_seed: dict, seeds, ids) -> np.ndarray:
  return np.array([[per_seed[s][i] for i in ids] for s in seeds])


def _common_ids(*per_seeds, seeds) -> list:
  return sorted(set.intersection(*(set(p[s]) for p in per_seeds for s in seeds)))


def method_intervals(values: Values, members, metrics) -> dict[str, stats.Interval]:
  out = {}
  for m in metrics:
    per_seed, _ = values.per_seed(members, m)
    seeds = sorted(per_seed)
    ids = _common_ids(per_seed, seeds=seeds) if seeds else []
    if ids:
      out[m] = stats.mean_ci(_matrix(per_seed, seeds, ids), num_resamples=NUM_RESAMPLES)
  return out


def paired_intervals(values: Values, members, baseline, metrics) -> dict[str, stats.Interval]:
  """method − baseline on the seeds both have: paired over seeds and example ids when both
  have per-example results, else paired over seeds for run-level values, else unpaired."""
  out = {}
  for m in metrics:
    (a, level_a), (b, level_b) = values.per_seed(members, m), values.per_seed(baseline, m)
    seeds = sorted(set(a) & set(b))
    if not seeds:
      continue
    if level_a == level_b and level_a in ("examples", "run"):
      ids = _common_ids(a, b, seeds=seeds)
      if ids:
        out[m] = stats.paired_difference_ci(_matrix(a, seeds, ids), _matrix(b, seeds, ids),
                                            num_resamples=NUM_RESAMPLES)
      continue
    ids_a, ids_b = _common_ids(a, seeds=seeds), _common_ids(b, seeds=seeds)
    out[m] = stats.unpaired_difference_ci(_matrix(a, seeds, ids_a), _matrix(b, seeds, ids_b),
                                          num_resamples=NUM_RESAMPLES)
  return out


def format_ci(ci: stats.Interval | None, signed=False) -> str:
  """"mean [low, high]" to 3 decimals ("+" signs for differences); "–" for no interval."""
  if ci is None:
    return "–"
  f = "{:+.3f}" if signed else "{:.3f}"
  if np.isnan(ci.low):
    return f.format(ci.mean)
  return f"{f.format(ci.mean)} [{f.format(ci.low)}, {f.format(ci.high)}]"


def _csv_line(cells: list[str]) -> str:
  """One CSV row; a cell holding a comma (a layer map such as "0:1,1:3") is quoted."""
  out = io.StringIO()
  csv.writer(out, lineterminator="").writerow(cells)
  return out.getvalue()


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
  table = [_csv_line(columns + ["seeds", "failed", "num_examples"]
                     + [f"{m}_{s}" for m in metrics for s in ("mean", "low", "high")])]
  for key, members in groups.items():
    done = [r for r in members if r["status"] == "done"]
    cis = method_intervals(values, done, metrics)
    n = max((ci.num_examples for ci in cis.values()), default=0)
    h = head(key, members) + [str(len(done)), str(len(members) - len(done)), str(n)]
    md.append("| " + " | ".join(h + [format_ci(cis.get(m)) for m in metrics]) + " |")
    table.append(_csv_line(h + [x for m in metrics for x in _csv(cis.get(m))]))

  diff_csv = [_csv_line(columns + ["seeds"] + [f"{m}_{s}" for m in metrics
                                               for s in ("diff", "low", "high", "excludes_zero")])]
  if groups:
    (base_key, base_rows), *others = groups.items()
    base_done = [r for r in base_rows if r["status"] == "done"]
    md += ["", f"## Paired differences vs {method_label(dict(base_key))} "
               f"(λ={float(dict(base_key).get(LAMBDA_KEY, 0.0)):g})",
           "",
           "Method − baseline on the same seeds and examples, 95% CI; * marks a CI that "
           "excludes 0.",
           "",
           "| " + " | ".join(columns + ["seeds"] + metrics) + " |",
           "|" + "---|" * (len(columns) + 1 + len(metrics))]
    for key, members in others:
      done = [r for r in members if r["status"] == "done"]
      cis = paired_intervals(values, done, base_done, metrics)
      seeds = max((ci.num_seeds for ci in cis.values()), default=0)
      h = head(key, members) + [str(seeds)]
      cells = [format_ci(cis.get(m), signed=True) + (" *" if m in cis and cis[m].excludes_zero else "")
               for m in metrics]
      md.append("| " + " | ".join(h + cells) + " |")
      diff_csv.append(_csv_line(h + [x for m in metrics for x in (
          _csv(cis.get(m)) + [str(cis[m].excludes_zero) if m in cis else ""])]))
  return {"summary.md": "\n".join(md) + "\n", "summary.csv": "\n".join(table) + "\n",
          "differences.csv": "\n".join(diff_csv) + "\n"}
