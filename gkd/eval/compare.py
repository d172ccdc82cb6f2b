"""A finished sweep read by its arm's method names, and the paired comparisons its plan fixes.

An arm's config names its methods in `METHODS` ({name: overrides}); each sweep point is one
method's overrides plus a seed. The analysis scripts beside an arm's results (compare.py,
exposure.py, experiments/quality_diversity.py) find a point's method here, one way for all.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np

from gkd.eval import stats
from gkd.eval.summary import flat_overrides
from gkd.rundir import read_examples, read_jsonl


def load_config_module(path: str):
  """The Python config file at `path` as a module (its METHODS, get_config, get_sweep)."""
  spec = importlib.util.spec_from_file_location("arm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str, arg: str = ""):
  """(config, module) for `configs/NAME.py[:ARG]`, with `arg` appended to ARG."""
  path, _, base = spec.partition(":")
  module = load_config_module(path)
  return module.get_config(",".join(filter(None, (base, arg)))), module


def method_key(overrides: dict) -> tuple:
  """A point's overrides without its seed, in one hashable spelling (nested dicts flattened)."""
  flat = flat_overrides({k: v for k, v in overrides.items() if k != "seed"})
  return tuple(sorted((k, str(v)) for k, v in flat.items()))


def method_names(methods: dict) -> dict:
  """{method_key(overrides): name} for a config's METHODS."""
  return {method_key(m): name for name, m in methods.items()}


def finished_points(sweep_dir: str, methods: dict) -> list[tuple[str, int, dict]]:
  """(method name, seed, results.jsonl row) of each finished point whose overrides are one of
  `methods` (others, and points not done, are left out), in the sweep's order."""
  names = method_names(methods)
  out = []
  for row in read_jsonl(os.path.join(sweep_dir, "results.jsonl")):
    name = names.get(method_key(row["overrides"]))
    if row.get("status") == "done" and name is not None:
      out.append((name, row["overrides"].get("seed"), row))
  return out


def per_example(sweep_dir: str, methods: dict, metric: str = "accuracy") -> dict:
  """{method: {seed: per-example `metric`, ordered by example id}} of a sweep's finished points;
  points whose rows lack `metric` (SFT's have no teacher metrics) are left out."""
  runs = {}
  for name, seed, row in finished_points(sweep_dir, methods):
    rows = read_examples(os.path.join(sweep_dir, "points", row["point"]))
    if rows is None:
      raise FileNotFoundError(f"{sweep_dir}: point {row['point']} has no per-example eval rows")
    if any(metric not in r for r in rows):
      continue
    rows = sorted(rows, key=lambda r: r["example_id"])
    runs.setdefault(name, {})[int(seed)] = np.array([r[metric] for r in rows])
  return runs


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Method a minus method b on their common seeds and the same examples."""
  a: str
  b: str
  seeds: tuple
  nominal: stats.Interval  # 95%
  strict: stats.Interval | None  # at the family-wise confidence the caller asked for, if any
  discordance: float  # share of (seed, example) cells where the two differ

  def __str__(self) -> str:
    n, s = self.nominal, self.strict
    strict = f", Bonferroni [{s.low:+.4f}, {s.high:+.4f}]" if s else ""
    return (f"{self.a} - {self.b} ({len(self.seeds)} seeds): {n.mean:+.4f} [{n.low:+.4f}, "
            f"{n.high:+.4f}]{strict}, discordance {self.discordance:.3f}")


def paired(runs: dict, a: str, b: str, *,
           strict_confidence: float | None = None) -> Comparison | None:
  """`a` − `b` from `per_example`'s runs, paired by seed and example; None without common seeds."""
  seeds = tuple(sorted(set(runs.get(a, {})) & set(runs.get(b, {}))))
  if not seeds:
    return None
  x = np.stack([runs[a][s] for s in seeds])
  y = np.stack([runs[b][s] for s in seeds])
  strict = (stats.paired_difference_ci(x, y, confidence=strict_confidence)
            if strict_confidence else None)
  return Comparison(a, b, seeds, stats.paired_difference_ci(x, y), strict,
                    float(np.mean(x != y)))


def describe(runs: dict, a: str, b: str, *, strict_confidence: float | None = None) -> str:
  """One line for `paired(...)`, or says that the two have no seed in common."""
  c = paired(runs, a, b, strict_confidence=strict_confidence)
  return str(c) if c else f"{a} - {b}: no common seeds"


def verdict(interval: stats.Interval, *, margin: float) -> str:
  """A plan's reading of a difference's 95% interval: "supported" when it lies above 0;
  "against" when it lies entirely below `margin` (an effect of `margin` or more is ruled out);
  both can hold at once (a real but small effect), and neither is "inconclusive"."""
  above, below = interval.low > 0, interval.high < margin
  if above and below:
    return f"supported (above 0), and against an effect of {margin:+.3f} or more"
  if above:
    return "supported (above 0)"
  if below:
    return f"against (entirely below {margin:+.3f})"
  return "inconclusive"


def gains_over(runs: dict, methods: tuple, base: str) -> tuple[dict, list] | None:
  """Each method's mean accuracy minus `base`'s, averaged over the seeds all of them share
  (the paper's relative view: how much of a gain over the baseline each method makes)."""
  if not all(m in runs for m in (*methods, base)):
    return None
  seeds = sorted(set.intersection(*(set(runs[m]) for m in (*methods, base))))
  return {m: float(np.mean([runs[m][s].mean() - runs[base][s].mean() for s in seeds]))
          for m in methods}, seeds


def between_seeds(runs: dict) -> list[str]:
  """For scale: per method, how often two of its seeds disagree on an example (every pair)."""
  lines = []
  for method, by_seed in runs.items():
    seeds = sorted(by_seed)
    pairs = [np.mean(by_seed[i] != by_seed[j]) for i in seeds for j in seeds if i < j]
    if pairs:
      lines.append(f"{method}: discordance {np.mean(pairs):.3f} "
                   f"(pairs {min(pairs):.3f}-{max(pairs):.3f})")
  return lines


def rerun_difference(check_dir: str, runs: dict, methods: dict, method: str, seed: int,
                     what: str) -> str | None:
  """One point run again in `check_dir` (say, on a retrained export) against the sweep's own run
  of it, example by example: "METHOD seed S, WHAT: accuracy A vs B, difference [CI], discordance";
  None until both runs exist."""
  check = per_example(check_dir, methods) if os.path.isdir(check_dir) else {}
  if seed not in check.get(method, {}) or seed not in runs.get(method, {}):
    return None
  again, first = check[method][seed], runs[method][seed]
  d = stats.paired_difference_ci(again[None], first[None])
  return (f"{method} seed {seed}, {what}: accuracy {again.mean():.4f} vs {first.mean():.4f}, "
          f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], "
          f"discordance {float(np.mean(again != first)):.3f}")
