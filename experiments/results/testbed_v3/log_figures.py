"""The training-log figures experiments/README.md quotes, from the committed metrics logs: per
sweep and method, over its seeds (min–max of the per-run values), the median seconds per step,
the median on-policy loss (the divergence, nats per token), and where the method logs them the
mean speculative-KD replacement rate, the mean RL reward and the share of logged steps that
generated fresh samples (replay). Steps are those the runs logged (every 25th). Reads the
committed files only:
  PYTHONPATH=. python experiments/results/testbed_v3/log_figures.py > experiments/results/testbed_v3/log_figures.txt
"""

import os

import numpy as np

from gkd import rundir
from gkd.eval import summary

HERE = os.path.dirname(os.path.abspath(__file__))
SWEEPS = ("curves", "curves_b", "prompts", "prompts_b", "temperature_2000_prompts", "temperature",
          "paper", "beyond", "store")
STAGES = ("stages", "stages_b")


def _figures(history: list[dict]) -> dict[str, float]:
  train = [h for h in history if "loss" in h]
  out = {"step_s median": np.median([h["step_s"] for h in train])}
  if any("divergence" in h for h in train):
    out["loss median"] = np.median([h["divergence"] for h in train if "divergence" in h])
  for key, name in (("skd_replacement_rate", "skd_replacement_rate mean"),
                    ("rl_reward", "rl_reward mean")):
    if any(key in h for h in train):
      out[name] = np.mean([h[key] for h in train if key in h])
  if any(h.get("source") == "replay" for h in train):
    out["fresh share"] = np.mean([h.get("source") == "student" for h in train])
  return out


def _span(values) -> str:
  lo, hi = min(values), max(values)
  return f"{lo:.4g}" if lo == hi else f"{lo:.4g}–{hi:.4g}"


def main():
  for stages in STAGES:
    for run in ("teacher", "student_n2000"):
      history = rundir.read_jsonl(os.path.join(HERE, stages, run, rundir.METRICS))
      steps = max(h["step"] for h in history)
      step_s = _figures(history)["step_s median"]
      print(f"{stages}/{run}: {steps} steps; step_s median {step_s:.3g}")
  for sweep in SWEEPS:
    rows = rundir.read_jsonl(os.path.join(HERE, sweep, "results.jsonl"))
    for key, members in summary.group_rows(rows).items():
      overrides = dict(key)
      lam = float(overrides.get(summary.LAMBDA_KEY, 0))
      label = f"{summary.method_label(overrides)} λ={lam:g}"
      settings = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in key
                          if k in ("sampling.temperature", "data.num_train_examples"))
      runs = [_figures(rundir.read_jsonl(os.path.join(HERE, sweep, "points", r["point"],
                                                      rundir.METRICS))) for r in members]
      cells = [f"{name} {_span([f[name] for f in runs])}" for name in runs[0]]
      print(f"{sweep}: {label} {settings}: {len(runs)} seeds; " + "; ".join(cells))


if __name__ == "__main__":
  main()
