"""Paper-style figures from a sweep directory, with 95% bootstrap CIs as error bars.

Reads results.jsonl and each point's files under points/NAME/ (see gkd.eval.summary for how the
intervals are formed). Used by notebooks/analysis.ipynb; every function returns the matplotlib
Figure and saves a PNG into `save_to` when given. `metric_curves` draws one run's learning curves
for its report (gkd.train.report).
"""

import json
import os

import matplotlib

matplotlib.use("Agg")  # headless: notebooks run under nbclient in the tests
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gkd.eval import stats, summary  # noqa: E402
from gkd import rundir  # noqa: E402
from gkd.rundir import read_jsonl  # noqa: E402

LAMBDA_KEY = summary.LAMBDA_KEY


def load_results(sweep_dir: str) -> list[dict]:
  rows = read_jsonl(os.path.join(sweep_dir, "results.jsonl"))
  if not rows:
    raise FileNotFoundError(f"No results in {sweep_dir}/results.jsonl — run gkd.sweep first.")
  return rows


def load_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def method_label(overrides: dict) -> str:
  return summary.method_label(overrides)


# Overrides that set where a method runs rather than which method it is. A figure names them
# beside the method wherever they vary in the sweep, so points at different settings are never
# pooled into one bar (metric_vs puts its own setting on the x-axis instead).
SETTINGS = {"data.num_train_examples": "{:g} prompts", "sampling.temperature": "T={:g}"}


def _lam(overrides: dict) -> float:
  return float(overrides.get(LAMBDA_KEY, 0.0))


def _labeller(rows, without: tuple[str, ...] = ()):
  """A function from a point's overrides to its figure label: method_label (each added method on
  its own line), then the SETTINGS that take more than one value across `rows` (except those in
  `without`)."""
  flats = [summary.flat_overrides(r["overrides"]) for r in rows]
  varying = [k for k in SETTINGS if k not in without and len({f.get(k) for f in flats}) > 1]

  def label(overrides: dict) -> str:
    flat = summary.flat_overrides(overrides)
    method = method_label(overrides).replace(" + ", "\n+ ")  # one added method a line
    return "\n".join([method] + [SETTINGS[k].format(float(flat[k])) for k in varying if k in flat])
  return label


def _done(members):
  return [r for r in members if r.get("status") == "done"]


def intervals(rows, sweep_dir: str, metric: str) -> dict[tuple, stats.Interval]:
  """{(method, λ): mean with its 95% CI} over finished points."""
  values, label = summary.Values(sweep_dir, rows), _labeller(rows)
  out = {}
  for key, members in summary.group_rows(rows).items():
    ci = summary.method_intervals(values, _done(members), [metric]).get(metric)
    if ci is not None:
      out[(label(dict(key)), _lam(dict(key)))] = ci
  return out


def _yerr(cis):
  """Asymmetric error bars (none where a single value has no interval)."""
  return np.nan_to_num(np.array([[c.mean - c.low, c.high - c.mean] if c else [np.nan] * 2
                                 for c in cis]).T)


def _save(fig, save_to, name):
  if save_to:
    fig.savefig(os.path.join(save_to, name), dpi=120, bbox_inches="tight")
  return fig


def final_metric_bars(rows, sweep_dir, metric="accuracy", *, reference: dict | None = None,
                      save_to=None):
  """Final metric per method and λ with 95% CIs; dashed lines for reference runs."""
  data = intervals(rows, sweep_dir, metric)
  methods = list(dict.fromkeys(m for m, _ in data))  # the sweep's order: its baseline first
  lambdas = sorted({lam for _, lam in data})
  fig, ax = plt.subplots(figsize=(1.6 * len(methods) + 2, 3.5))
  width = 0.8 / max(len(lambdas), 1)
  for i, lam in enumerate(lambdas):
    cis = [data.get((m, lam)) for m in methods]
    ax.bar(np.arange(len(methods)) + i * width, [c.mean if c else np.nan for c in cis], width,
           yerr=_yerr(cis), capsize=3, label=f"λ={lam:g}")
  for name, value in (reference or {}).items():
    ax.axhline(value, ls="--", color="gray")
    ax.text(len(methods) - 0.5, value, f" {name}", va="bottom", ha="right", color="gray")
  ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods)
  ax.set_ylabel(f"{metric} (95% CI)")
  ax.set_title(f"Final {metric} by method and on-policy fraction λ")
  ax.legend(fontsize=8)
  return _save(fig, save_to, f"final_{metric}.png")


def paired_difference_bars(rows, sweep_dir, metric="accuracy", *, save_to=None):
  """Each method − the sweep's first (baseline) method, paired over seeds and examples, 95% CI."""
  groups = list(summary.group_rows(rows).items())
  if len(groups) < 2:
    raise ValueError("A paired comparison needs at least two methods in the sweep.")
  values, label = summary.Values(sweep_dir, rows), _labeller(rows)
  (base_key, base), *others = groups
  labels, cis = [], []
  for key, members in others:
    ci = summary.paired_intervals(values, _done(members), _done(base), [metric]).get(metric)
    labels.append(f"{label(dict(key))}\nλ={_lam(dict(key)):g}")
    cis.append(ci)
  fig, ax = plt.subplots(figsize=(0.7 * len(labels) + 2, 3.4))
  colors = ["tab:green" if c and c.excludes_zero and c.mean > 0 else
            "tab:red" if c and c.excludes_zero else "tab:gray" for c in cis]
  ax.bar(range(len(labels)), [c.mean if c else np.nan for c in cis], yerr=_yerr(cis), capsize=3,
         color=colors)
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xticks(range(len(labels)), labels, fontsize=7)
  ax.set_ylabel(f"Δ {metric} vs {label(dict(base_key))} (95% CI)")
  ax.set_title("Paired differences (coloured: CI excludes 0)")
  return _save(fig, save_to, f"paired_{metric}.png")


def heatmap(rows, sweep_dir, metric="accuracy", *, save_to=None):
  """Divergence × λ grid of the mean, each cell annotated with its CI half-width."""
  data = intervals(rows, sweep_dir, metric)
  methods = list(dict.fromkeys(m for m, _ in data))  # the sweep's order: its baseline first
  lambdas = sorted({lam for _, lam in data})
  cell = {k: data.get(k) for k in ((m, lam) for m in methods for lam in lambdas)}
  grid = np.array([[cell[m, lam].mean if cell[m, lam] else np.nan for lam in lambdas]
                   for m in methods])
  fig, ax = plt.subplots(figsize=(1.4 * len(lambdas) + 2.5, 0.5 * len(methods) + 1.5))
  im = ax.imshow(grid, cmap="viridis", aspect="auto")
  for (i, j), v in np.ndenumerate(grid):
    ci = cell[methods[i], lambdas[j]]
    text = f"{v:.3f}" + (f"\n±{ci.half_width:.3f}" if ci and not np.isnan(ci.low) else "")
    ax.text(j, i, text, ha="center", va="center", fontsize=8,
            color="w" if v < np.nanmean(grid) else "k")
  ax.set_xticks(range(len(lambdas)), [f"λ={lam:g}" for lam in lambdas])
  ax.set_yticks(range(len(methods)), methods)
  ax.set_title(f"{metric}: divergence × on-policy fraction (± 95% CI half-width)")
  fig.colorbar(im, ax=ax)
  return _save(fig, save_to, f"heatmap_{metric}.png")


def metric_vs(rows, sweep_dir, key: str, metric="accuracy", *, save_to=None):
  """The metric against one override (sampling temperature, student width, ...), one line per
  method and λ, with 95% CIs."""
  values, label_of = summary.Values(sweep_dir, rows), _labeller(rows, without=(key,))
  lines = {}
  for gkey, members in summary.group_rows(rows).items():
    o = dict(gkey)
    if key not in o:
      continue
    ci = summary.method_intervals(values, _done(members), [metric]).get(metric)
    if ci is not None:
      lines.setdefault(f"{label_of(o)} λ={_lam(o):g}", []).append((float(o[key]), ci))
  fig, ax = plt.subplots(figsize=(5, 3.4))
  for label, points in sorted(lines.items()):
    points.sort(key=lambda p: p[0])
    ax.errorbar([x for x, _ in points], [c.mean for _, c in points],
                yerr=_yerr([c for _, c in points]), capsize=3, marker="o", label=label)
  ax.set_xlabel(key)
  ax.set_ylabel(f"{metric} (95% CI)")
  ax.legend(fontsize=8)
  return _save(fig, save_to, f"{metric}_vs_{key.rsplit('.', 1)[-1]}.png")


def learning_curves(rows, sweep_dir, metric="loss", *, save_to=None):
  """Training curves of every finished point, one panel per λ, one colour per method."""
  lambdas = sorted({_lam(r["overrides"]) for r in rows})
  label = _labeller(rows)
  methods = sorted({label(r["overrides"]) for r in rows})
  colors = dict(zip(methods, plt.cm.tab10.colors))
  fig, axes = plt.subplots(1, len(lambdas), figsize=(4 * len(lambdas), 3.2), squeeze=False,
                           sharey=True)
  for r in rows:
    path = os.path.join(sweep_dir, "points", r["point"], rundir.METRICS)
    history = [h for h in read_jsonl(path) if metric in h]
    if not history:
      continue
    ax = axes[0, lambdas.index(_lam(r["overrides"]))]
    m = label(r["overrides"])
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
  return _save(fig, save_to, f"curves_{metric.replace('/', '_')}.png")


def run_curves(runs: dict[str, str], metric="eval/accuracy", *, save_to=None, name="curves.png"):
  """A metric against the step for single runs ({label: workdir with metrics.jsonl}), with the
  per-eval 95% CI over examples where the runs logged num_examples (binomial metrics)."""
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for label, workdir in runs.items():
    history = [h for h in read_jsonl(os.path.join(workdir, rundir.METRICS)) if metric in h]
    steps = np.array([h["step"] for h in history])
    p = np.array([h[metric] for h in history])
    n = np.array([h.get(metric.rsplit("/", 1)[0] + "/num_examples", 0) for h in history])
    line, = ax.plot(steps, p, marker="o", ms=3, label=label)
    if metric.endswith("accuracy") and np.all(n > 0):  # normal-approximation binomial band
      half = 1.96 * np.sqrt(p * (1 - p) / n)
      ax.fill_between(steps, p - half, p + half, color=line.get_color(), alpha=0.2)
  ax.set_xlabel("step")
  ax.set_ylabel(metric)
  ax.legend(fontsize=8)
  return _save(fig, save_to, name)


def teacher_student_gap(rows, sweep_dir, teacher_metrics: dict, metric="accuracy", *, save_to=None):
  """Teacher − student gap per method and λ (smaller is better), with the student's 95% CI."""
  data = intervals(rows, sweep_dir, metric)
  keys = list(data)
  cis = [data[k] for k in keys]
  fig, ax = plt.subplots(figsize=(0.6 * len(keys) + 2, 3.2))
  ax.bar(range(len(keys)), [teacher_metrics[metric] - c.mean for c in cis], yerr=_yerr(cis)[::-1],
         capsize=3)
  ax.set_xticks(range(len(keys)), [f"{m}\nλ={lam:g}" for m, lam in keys], fontsize=7)
  ax.set_ylabel(f"teacher − student {metric}")
  ax.set_title("Teacher–student gap")
  return _save(fig, save_to, f"gap_{metric}.png")


def metric_curves(history: list[dict], path: str, *, teacher_prefix: str = "teacher/") -> list[str]:
  """One run's learning curves from its metrics.jsonl rows: the train loss and each eval metric
  against the step, one panel each, with the teacher's own score (`eval/<teacher_prefix>NAME`,
  measured once) as a dashed line. Saves a PNG at `path`; returns the metrics drawn."""
  teacher_key = f"eval/{teacher_prefix}"
  names = sorted({k for r in history for k, v in r.items() if k.startswith("eval/")
                  and not k.startswith(teacher_key) and isinstance(v, (int, float))
                  and k != "eval/num_examples"})
  keys = ["loss"] + names
  cols = min(4, len(keys))
  rows = -(-len(keys) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    points = [r for r in history if isinstance(r.get(key), (int, float))]
    ax.plot([r["step"] for r in points], [r[key] for r in points], ms=3,
            marker=None if key == "loss" else "o")
    teacher = next((r[teacher_key + key[5:]] for r in history if teacher_key + key[5:] in r), None)
    if key != "loss" and teacher is not None:
      ax.axhline(teacher, ls="--", color="gray", label="teacher")
      ax.legend(fontsize=7)
    ax.set_title("train loss" if key == "loss" else key[5:], fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return keys


def quality_diversity(rows: list[dict], *, diversity="distinct_2", save_to=None):
  """experiments/quality_diversity.py's rows (one per model × temperature): the quality of the
  samples against their `diversity` (a row's field) over the sampling temperature, and the
  teacher's per-position NLL of the T=1 samples. A method's seeds are averaged into one line;
  on-policy methods (a student fraction above 0) solid, the others dashed, the SFT start grey
  and the teacher black."""
  groups = {}
  for r in rows:
    groups.setdefault(r.get("method", r["model"]), []).append(r)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
  colors = iter(c for i, c in enumerate(plt.cm.tab10.colors) if i != 7)  # 7: the start's grey
  fixed = {"start": dict(color="gray", ls=":"), "teacher": dict(color="black", ls=":")}
  for name, rs in groups.items():
    temps = sorted({r["temperature"] for r in rs})
    at = [[r for r in rs if r["temperature"] == t] for t in temps]
    x = [np.mean([r[diversity] for r in a]) for a in at]
    y = [np.mean([r["quality"] for r in a]) for a in at]
    style = fixed.get(name) or dict(color=next(colors),
                                    ls="-" if rs[0].get("student_fraction", 0) > 0 else "--")
    seeds = len({r.get("seed") for r in rs})
    ax1.plot(x, y, marker="o", ms=3, label=name + (f" ({seeds} seeds)" if seeds > 1 else ""),
             **style)
    for t, xi, yi in zip(temps, x, y):
      ax1.annotate(f"{t:g}", (xi, yi), fontsize=6, alpha=0.6)
    t1 = [r for r in rs if r["temperature"] == 1.0 and "teacher_nll_by_position" in r]
    if t1:
      counts = np.sum([r["tokens_by_position"] for r in t1], axis=0)
      nll = np.mean([r["teacher_nll_by_position"] for r in t1], axis=0)
      keep = counts >= 20 * len(t1)
      ax2.plot(np.arange(len(nll))[keep], nll[keep], **style)
  ax1.set(xlabel=f"diversity: {diversity} of a prompt's samples", ylabel="quality of the samples",
          title="Quality against diversity (labels: temperature)")
  ax2.set(xlabel="token position in the sample", ylabel="teacher NLL (nats)",
          title="Teacher's NLL of the T=1 samples")
  fig.legend(*ax1.get_legend_handles_labels(), loc="center right", fontsize=7)
  fig.subplots_adjust(right=0.83, wspace=0.25)
  return _save(fig, save_to, "quality_diversity.png")
