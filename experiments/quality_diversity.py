"""Sampled-output metrics of a sweep's students: the quality–diversity curve over the sampling
temperature (the GKD paper's Fig. 4) and the teacher's per-position NLL of the students' samples.

  python experiments/quality_diversity.py --config=configs/arm2_smollm2.py[:ARG] --sweep=SWEEP_DIR \
      --out=experiments/results/arm2_smollm2/METHODS_DIR [--num_prompts=200] [--samples=4] [--seeds=0]

For every finished point of the sweep (its student export under SWEEP/points/NAME/export), on the
first `num_prompts` test prompts, `samples` completions per prompt at each temperature in TEMPS:
  quality        the task's score of the samples (accuracy for graded tasks, else ROUGE-L);
  diversity      per prompt, the share of distinct completions among its samples, and distinct-2
                 over its samples' words; repetition: the share of a completion's word 3-grams
                 that repeat an earlier one in it;
  teacher NLL    at T=1, the teacher's −log p of each sampled token, by position (tokens).
The SFT student (the sweep's start, `--start`) and the teacher itself are measured the same way.
Writes OUT/quality_diversity.jsonl (one row per model × temperature) and OUT/quality_diversity.png.
Neither objective optimises these directly: they are the judge, not the target.
"""

import argparse
import collections
import importlib.util
import json
import os

import jax
import numpy as np
from flax import nnx

from gkd import sampling, scoring
from gkd.data import pipeline, tasks
from gkd.eval import metrics
from gkd.eval.gate import score
from gkd.teachers.build import build_models

TEMPS = (0.25, 0.5, 1.0, 1.5)


def load_config(config_spec: str, arg: str):
  """configs/NAME.py[:ARG] with `arg` appended to ARG."""
  path, _, base = config_spec.partition(":")
  spec = importlib.util.spec_from_file_location("arm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(",".join(filter(None, (base, arg)))), module


def repetition(text: str, n: int = 3) -> float:
  """The share of a text's word n-grams that repeat an earlier one (0 when it has none)."""
  words = text.split()
  grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
  return 1 - len(set(grams)) / len(grams) if grams else 0.0


def measure(config, tokenizer, teacher, student, *, num_prompts: int, samples: int) -> list[dict]:
  """Rows {temperature, quality, unique, distinct_2, repetition, teacher_nll_by_position}."""
  task = tasks.get_task(config.data.task)
  examples = pipeline.eval_examples_for_config(config, "test", num_prompts)
  t_graph, t_params = nnx.split(teacher)
  s_graph, s_params = nnx.split(student)
  sampler = sampling.Sampler(s_graph, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  width = config.data.max_response_len
  rows = []
  for ti, temperature in enumerate(TEMPS):
    texts = collections.defaultdict(list)
    nll_sum, nll_count = np.zeros(width), np.zeros(width)
    loader = pipeline.loader_for_config(config, tokenizer, split="test", batch_size=50,
                                        shuffle=False, num_epochs=1, num_examples=len(examples))
    for bi, batch in enumerate(loader):
      for k in range(samples):
        key = jax.random.fold_in(jax.random.key(1000 * ti + k), bi)
        out = sampler(s_params, batch["prompt_tokens"], batch["prompt_mask"], rng=key,
                      max_new_tokens=width, temperature=temperature)
        tok, mask = np.asarray(out.tokens), np.asarray(out.mask)
        for r, i in enumerate(batch["example_id"]):
          if i >= 0:
            texts[int(i)].append(tokenizer.decode(tok[r][mask[r]].tolist()))
        if temperature == 1.0:
          scored = dict(prompt_tokens=batch["prompt_tokens"], prompt_mask=batch["prompt_mask"],
                        response_tokens=tok, response_mask=mask)
          lp = np.asarray(scoring.token_scores(nnx.merge(t_graph, t_params), scored))
          real = mask & (batch["example_id"] >= 0)[:, None]
          nll_sum += -(lp * real).sum(0)
          nll_count += real.sum(0)
    quality = [score(task, c, examples[i]) for i, cs in texts.items() for c in cs]
    row = {"temperature": temperature, "num_prompts": len(texts), "samples": samples,
           "quality": float(np.mean(quality)),
           "unique": float(np.mean([len(set(cs)) / len(cs) for cs in texts.values()])),
           "distinct_2": float(np.mean([metrics.distinct_n(cs, 2) for cs in texts.values()])),
           "repetition": float(np.mean([repetition(c) for cs in texts.values() for c in cs]))}
    if temperature == 1.0:
      row["teacher_nll_by_position"] = (nll_sum / np.maximum(nll_count, 1)).tolist()
      row["tokens_by_position"] = nll_count.astype(int).tolist()
      row["teacher_nll"] = float(nll_sum.sum() / max(nll_count.sum(), 1))
    rows.append(row)
  return rows


def plot(rows: list[dict], path: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  by_model = collections.defaultdict(list)
  for r in rows:
    by_model[r["model"]].append(r)
  for name, rs in sorted(by_model.items()):
    rs = sorted(rs, key=lambda r: r["temperature"])
    ax1.plot([r["unique"] for r in rs], [r["quality"] for r in rs], marker="o", label=name)
    for r in rs:
      ax1.annotate(f"{r['temperature']:g}", (r["unique"], r["quality"]), fontsize=6)
    t1 = next(r for r in rs if r["temperature"] == 1.0)
    n = np.array(t1["tokens_by_position"])
    ys = np.array(t1["teacher_nll_by_position"])
    keep = n >= 20
    ax2.plot(np.arange(len(ys))[keep], ys[keep], label=name)
  ax1.set(xlabel="diversity: distinct samples per prompt (share)", ylabel="quality of samples",
          title="quality vs diversity over sampling temperature")
  ax2.set(xlabel="token position in the sample", ylabel="teacher NLL (nats)",
          title="teacher's NLL of the student's T=1 samples")
  ax2.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", required=True)
  parser.add_argument("--sweep", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--start", default="", help="the SFT student's export (every run's start)")
  parser.add_argument("--num_prompts", type=int, default=200)
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--seeds", default="0", help="comma-separated seeds of the sweep to measure")
  args = parser.parse_args()
  seeds = {int(s) for s in args.seeds.split(",")}
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "quality_diversity.jsonl")
  done = set()
  if os.path.exists(path):  # resumable: models already measured are kept
    with open(path) as f:
      done = {json.loads(line)["model"] for line in f}
  _, module = load_config(args.config, "stage=gkd")
  names = {json.dumps(m, sort_keys=True): n for n, m in module.METHODS.items()}
  with open(os.path.join(args.sweep, "results.jsonl")) as f:
    points = [json.loads(line) for line in f]
  models = []
  if args.start:
    models.append(("start (SFT student)", args.start))
  for p in points:
    seed = p["overrides"].get("seed")
    method = names.get(json.dumps({k: v for k, v in p["overrides"].items() if k != "seed"},
                                  sort_keys=True), p["point"])
    export = os.path.join(args.sweep, "points", p["point"], "export")
    if p.get("status") == "done" and seed in seeds and os.path.isdir(export):
      models.append((f"{method} seed {seed}", export))
  models.append(("teacher", None))
  for name, export in models:
    if name in done:
      continue
    config, _ = load_config(args.config, "stage=gkd" + (f",student={export}" if export else ""))
    if export is None:  # the teacher itself in the student's slot
      config.student.update(source=config.teacher.source, path=config.teacher.path)
    tokenizer, teacher, student = build_models(config)
    rows = measure(config, tokenizer, teacher, student, num_prompts=args.num_prompts,
                   samples=args.samples)
    with open(path, "a") as f:  # a model's rows together: a killed run redoes only that model
      f.writelines(json.dumps({"model": name, **row}) + "\n" for row in rows)
    print(f"{name}: done", flush=True)
  with open(path) as f:
    plot([json.loads(line) for line in f], os.path.join(args.out, "quality_diversity.png"))


if __name__ == "__main__":
  main()
