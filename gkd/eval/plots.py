"""Paper-style figures from a sweep directory (results.jsonl + each point's metrics.jsonl).

Used by notebooks/analysis.ipynb; every function returns the matplotlib Figure and saves a PNG
into the sweep dir when `save_to` is given.
"""

import collections
import json
import os

import matplotlib

matplotlib.use("Agg")  # headless: notebooks run under nbclient in the tests
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gkd import divergences, rundir  # noqa: E402
from gkd.rundir import read_jsonl  # noqa: E402

LAMBDA_KEY = "mix.student"


def load_results(sweep_dir: str) -> list[dict]:
  rows = read_jsonl(os.path.join(sweep_dir, "results.jsonl"))
  if not rows:
    raise FileNotFoundError(f"No results in {sweep_dir}/results.jsonl — run gkd.sweep first.")
  return rows


def method_label(overrides: dict) -> str:
  """'JSD(0.5)', 'FKL', 'SeqKD', 'SFT', ... from a point's overrides (the default config's
  divergence is generalized_jsd; λ is shown separately)."""
  if overrides.get("mode") == "sft":
    return "SFT"
  if float(overrides.get("mix.teacher", 0.0)) > 0:
    return "SeqKD"
  div = overrides.get("objective.divergence", "generalized_jsd")
  if div == "generalized_jsd":
    kw = {**divergences.PARAMS[div], **overrides.get("objective.divergence_kw", {})}
    return f"JSD({overrides.get('objective.divergence_kw.beta', kw['beta'])})"
  return {"forward_kl": "FKL", "reverse_kl": "RKL", "skew_kl": "SKL", "skew_reverse_kl": "SRKL",
          "total_variation": "TV"}.get(div, div)


def grouped(rows, metric: str):
  """{(method, λ): [metric per seed]} over finished points."""
  out = collections.defaultdict(list)
  for r in rows:
    if r.get("status") == "done" and r["metrics"].get(metric) is not None:
      out[(method_label(r["overrides"]), float(r["overrides"].get(LAMBDA_KEY, 0.0)))].append(
          r["metrics"][metric])
  return out


def _save(fig, save_to, name):
  if save_to:
    fig.savefig(os.path.join(save_to, name), dpi=120, bbox_inches="tight")
  return fig


def final_metric_bars(rows, metric="accuracy", *, reference: dict | None = None, save_to=None):
  """Final metric per method and λ, mean ± std over seeds; dashed lines for reference runs."""
  data = grouped(rows, metric)
  methods = sorted({m for m, _ in data})
  lambdas = sorted({lam for _, lam in data})
  fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 2, 3.5))
  width = 0.8 / max(len(lambdas), 1)
  for i, lam in enumerate(lambdas):
    means = [np.mean(data.get((m, lam), [np.nan])) for m in methods]
    stds = [np.std(data.get((m, lam), [np.nan])) for m in methods]
    ax.bar(np.arange(len(methods)) + i * width, means, width, yerr=stds, capsize=3, label=f"λ={lam:g}")
  for name, value in (reference or {}).items():
    ax.axhline(value, ls="--", color="gray")
    ax.text(len(methods) - 0.5, value, f" {name}", va="bottom", ha="right", color="gray")
  ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods)
  ax.set_ylabel(metric)
  ax.set_title(f"Final {metric} by divergence and on-policy fraction λ")
  ax.legend(fontsize=8)
  return _save(fig, save_to, f"final_{metric}.png")


def heatmap(rows, metric="accuracy", *, save_to=None):
  """Divergence × λ grid of the seed-mean metric."""
  data = grouped(rows, metric)
  methods = sorted({m for m, _ in data})
  lambdas = sorted({lam for _, lam in data})
  grid = np.array([[np.mean(data.get((m, lam), [np.nan])) for lam in lambdas] for m in methods])
  fig, ax = plt.subplots(figsize=(1.2 * len(lambdas) + 2.5, 0.5 * len(methods) + 1.5))
  im = ax.imshow(grid, cmap="viridis", aspect="auto")
  for (i, j), v in np.ndenumerate(grid):
    ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w" if v < np.nanmean(grid) else "k")
  ax.set_xticks(range(len(lambdas)), [f"λ={lam:g}" for lam in lambdas])
  ax.set_yticks(range(len(methods)), methods)
  ax.set_title(f"{metric}: divergence × on-policy fraction")
  fig.colorbar(im, ax=ax)
  return _save(fig, save_to, f"heatmap_{metric}.png")


def learning_curves(rows, metric="loss", *, save_to=None):
  """Training curves of every finished point, one panel per λ, one colour per method."""
  lambdas = sorted({float(r["overrides"].get(LAMBDA_KEY, 0.0)) for r in rows})
  methods = sorted({method_label(r["overrides"]) for r in rows})
  colors = dict(zip(methods, plt.cm.tab10.colors))
  fig, axes = plt.subplots(1, len(lambdas), figsize=(4 * len(lambdas), 3.2), squeeze=False, sharey=True)
  for r in rows:
    history = [h for h in read_jsonl(os.path.join(r["workdir"], rundir.METRICS)) if metric in h]
    if not history:
      continue
    ax = axes[0, lambdas.index(float(r["overrides"].get(LAMBDA_KEY, 0.0)))]
    m = method_label(r["overrides"])
    ax.plot([h["step"] for h in history], [h[metric] for h in history], color=colors[m], alpha=0.7,
            label=m if r["overrides"].get("seed", 0) == 0 else None)
  for ax, lam in zip(axes[0], lambdas):
    ax.set_title(f"λ={lam:g}")
    ax.set_xlabel("step")
  axes[0, 0].set_ylabel(metric)
  handles = {line.get_label(): line for ax in axes[0] for line in ax.get_lines()
             if not line.get_label().startswith("_")}  # one entry per method, from any panel
  fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=8)
  fig.subplots_adjust(right=0.88)
  return _save(fig, save_to, f"curves_{metric}.png")


def teacher_student_gap(rows, teacher_metrics: dict, metric="accuracy", *, save_to=None):
  """Teacher − student gap per method and λ (smaller is better)."""
  data = grouped(rows, metric)
  keys = sorted(data)
  gaps = [teacher_metrics[metric] - np.mean(data[k]) for k in keys]
  fig, ax = plt.subplots(figsize=(0.6 * len(keys) + 2, 3.2))
  ax.bar(range(len(keys)), gaps, yerr=[np.std(data[k]) for k in keys], capsize=3)
  ax.set_xticks(range(len(keys)), [f"{m}\nλ={lam:g}" for m, lam in keys], fontsize=7)
  ax.set_ylabel(f"teacher − student {metric}")
  ax.set_title("Teacher–student gap")
  return _save(fig, save_to, f"gap_{metric}.png")


def load_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)
