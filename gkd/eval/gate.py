"""The gate before an on-policy comparison: can this (teacher, student, task) rank on-policy
against off-policy distillation at all?

  python -m gkd.eval.gate --config=configs/NAME.py[:ARG] --out=SWEEP_DIR [--num_examples=500]

On-policy and off-policy distillation differ only in the prefixes the student is trained on:
its own samples, or the dataset's and the teacher's. Where the two sets of prefixes are nearly
the same, or where the student's own prefixes hold nothing the teacher can repair, no sweep can
tell the two apart, however many seeds it runs. The gate measures, on the VALIDATION split
(never test), with the config's teacher and student:

  agreement        the share of prompts whose greedy completions are token for token the same
                   (`exact`), and the share of the teacher's greedy tokens that are also the
                   student's argmax given the teacher's prefix (`token`, teacher-forced);
  student_samples  the student's NLL of its own samples at `sampling.temperature` (nats per
                   token and per sequence), and the share of samples equal to its greedy path;
  first_divergence the position where the student's greedy path first leaves the teacher's: a
                   histogram over positions, and the share that never leaves;
  recovery         for each prefix length k, the teacher's score when it greedily continues the
                   student's first k greedy tokens, against its score from scratch on the same
                   prompts; `recovery.rate` pools over k the prompts whose student prefix has
                   already left the teacher's path (eligible: the student wrote more than k
                   tokens). Near 0: once the student leaves the path, even the teacher is lost.

`verdict` is "can_rank" unless one of these holds (the thresholds are written into gate.json):
  same_path            agreement.exact >= 0.9: the student follows the teacher's greedy path
                       on nearly every prompt, so its prefixes are the teacher's;
  near_deterministic   student_samples.equals_greedy >= 0.9: on-policy samples are the greedy
                       path, one prefix per prompt;
  unrecoverable        recovery.rate < 0.25: what the student's own prefixes would teach is
                       how to continue from states no model can still solve;
  too_few_divergences  fewer than 20 diverged prefixes to judge recovery on.
A setting that fails is reported as such and not used to rank the two. Scores are the task's
grader (accuracy), or ROUGE-L against the reference for ungraded text tasks. DIR/gate.json
holds the measures and the verdict; DIR/gate_examples.jsonl.gz one row per prompt.
"""

import functools
import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import sampling, scoring
from gkd.data import graders, pipeline, tasks
from gkd.errors import UserError
from gkd.rundir import atomic_write

THRESHOLDS = {"same_path": 0.9, "near_deterministic": 0.9, "unrecoverable": 0.25,
              "min_diverged": 20}
PREFIX_LENGTHS = (4, 8, 16, 32)


def first_divergence(a_tokens, a_mask, b_tokens, b_mask) -> np.ndarray:
  """int[B]: the first position where two completions differ (a token, or one has ended and
  the other not), or -1 where they are the same up to and including their EOS."""
  a = np.where(a_mask, a_tokens, -1)
  b = np.where(b_mask, b_tokens, -1)
  differ = a != b
  return np.where(differ.any(-1), differ.argmax(-1), -1)


def extend_prompts(prompt_tokens, prompt_mask, prefix_tokens, prefix_lens, pad_id: int):
  """Left-padded prompts [B, P+K] with row r's first prefix_lens[r] tokens of `prefix_tokens`
  [B, K] appended after its real prompt tokens, and their mask."""
  b, p = prompt_tokens.shape
  width = p + prefix_tokens.shape[1]
  tokens = np.full((b, width), pad_id, np.int32)
  mask = np.zeros((b, width), bool)
  for r in range(b):
    row = np.concatenate([prompt_tokens[r][prompt_mask[r]], prefix_tokens[r][:prefix_lens[r]]])
    if len(row):
      tokens[r, width - len(row):] = row
      mask[r, width - len(row):] = True
  return tokens, mask


@functools.partial(jax.jit, static_argnames="graph")
def _argmax_matches(params, batch, *, graph):
  """bool[B, R]: where the model's argmax given the response's prefix is the response token."""
  logits = scoring.response_logits(nnx.merge(graph, params), batch)
  return jnp.argmax(logits, -1) == batch["response_tokens"]


def score(task, completion: str, example: dict) -> float:
  """The task's grade of a completion; ROUGE-L against the reference for ungraded text."""
  if example.get("grader") == "none":
    return graders.rouge(completion, example["response"])["rougeL"]
  return task.grade(completion, example)


class Gate:
  """Runs the gate's measures batch by batch (see the module docstring)."""

  def __init__(self, config, tokenizer, teacher, student, *, prefix_lengths=PREFIX_LENGTHS):
    self.config, self.tokenizer = config, tokenizer
    self.task = tasks.get_task(config.data.task)
    self.prefix_lengths = tuple(sorted(prefix_lengths))
    self.teacher_graph, self.teacher_params = nnx.split(teacher)
    self.student_graph, self.student_params = nnx.split(student)
    ids = dict(eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    s = config.sampling
    self.teacher_sampler = sampling.Sampler(self.teacher_graph, **ids)
    self.student_sampler = sampling.Sampler(self.student_graph, top_k=s.top_k, top_p=s.top_p,
                                            return_logprobs=True, **ids)
    self.temperature = float(s.temperature)

  def _decode(self, tokens, mask) -> str:
    return self.tokenizer.decode(np.asarray(tokens)[np.asarray(mask)].tolist())

  def batch_rows(self, batch: dict, examples: list[dict], key) -> list[dict]:
    """One row per real example of a loader batch (numpy arrays, example_id -1 on padding)."""
    prompt, pmask = batch["prompt_tokens"], batch["prompt_mask"]
    n = batch["response_tokens"].shape[1]
    gen = dict(max_new_tokens=n, rng=key)
    teacher = self.teacher_sampler(self.teacher_params, prompt, pmask, temperature=0.0, **gen)
    student = self.student_sampler(self.student_params, prompt, pmask, temperature=0.0, **gen)
    sample = self.student_sampler(self.student_params, prompt, pmask, temperature=self.temperature,
                                  **dict(gen, rng=jax.random.fold_in(key, 1)))
    t_tok, t_mask = np.asarray(teacher.tokens), np.asarray(teacher.mask)
    s_tok, s_mask = np.asarray(student.tokens), np.asarray(student.mask)
    x_tok, x_mask = np.asarray(sample.tokens), np.asarray(sample.mask)
    x_logp = np.asarray(sample.logprobs)
    on_teacher_path = dict(prompt_tokens=prompt, prompt_mask=pmask, response_tokens=t_tok,
                           response_mask=t_mask)
    agree = np.asarray(_argmax_matches(self.student_params, on_teacher_path,
                                       graph=self.student_graph)) & t_mask
    diverge = first_divergence(s_tok, s_mask, t_tok, t_mask)
    real = (s_mask & (s_tok != self.tokenizer.eos_id)).sum(-1)  # student tokens before its EOS
    continued = {}
    for k in self.prefix_lengths:
      if k >= n:
        continue
      lens = np.where(real > k, k, 0)
      tokens, mask = extend_prompts(prompt, pmask, s_tok[:, :k], lens, self.tokenizer.pad_id)
      out = self.teacher_sampler(self.teacher_params, tokens, mask, temperature=0.0,
                                 max_new_tokens=n - k, rng=key)
      continued[k] = (np.asarray(out.tokens), np.asarray(out.mask))
    rows = []
    for r, i in enumerate(batch["example_id"]):
      if i < 0:
        continue
      example = examples[i]
      t_text, s_text = self._decode(t_tok[r], t_mask[r]), self._decode(s_tok[r], s_mask[r])
      row = {"example_id": int(i), "teacher": t_text, "student": s_text,
             "sample": self._decode(x_tok[r], x_mask[r]),
             "teacher_score": score(self.task, t_text, example),
             "student_score": score(self.task, s_text, example),
             "first_divergence": int(diverge[r]),
             "sample_nll": float(-x_logp[r][x_mask[r]].sum()), "sample_tokens": int(x_mask[r].sum()),
             "sample_equals_greedy": bool(first_divergence(x_tok[r:r + 1], x_mask[r:r + 1],
                                                           s_tok[r:r + 1], s_mask[r:r + 1])[0] < 0),
             "token_agree": int(agree[r].sum()), "teacher_tokens": int(t_mask[r].sum()),
             "student_length": int(real[r]), "from_prefix": {}}
      for k, (c_tok, c_mask) in continued.items():
        if real[r] > k:
          text = self.tokenizer.decode(np.concatenate([s_tok[r][:k], c_tok[r][c_mask[r]]]).tolist())
          row["from_prefix"][str(k)] = score(self.task, text, example)
      rows.append(row)
    return rows

  def run(self, num_examples: int, batch_size: int) -> list[dict]:
    c = self.config
    examples = pipeline.eval_examples_for_config(c, "validation", num_examples)
    loader = pipeline.loader_for_config(c, self.tokenizer, split="validation",
                                        batch_size=min(batch_size, len(examples)), shuffle=False,
                                        num_epochs=1, num_examples=len(examples))
    key = jax.random.fold_in(jax.random.key(c.seed), 2**29)
    rows = []
    for step, batch in enumerate(loader):
      rows += self.batch_rows(batch, examples, jax.random.fold_in(key, step))
    return rows


def summarize(rows: list[dict], prefix_lengths, *, max_position: int,
              thresholds: dict = THRESHOLDS) -> dict:
  """gate.json's measures and verdict from the per-prompt rows of `Gate.run`."""
  mean = lambda xs: float(np.mean(xs)) if len(xs) else None  # noqa: E731
  div = np.array([r["first_divergence"] for r in rows])
  recovery = {}
  pooled = []
  for k in prefix_lengths:
    eligible = [r for r in rows if str(k) in r["from_prefix"]]
    left = [r for r in eligible if 0 <= r["first_divergence"] < k]
    pooled += [r["from_prefix"][str(k)] for r in left]
    recovery[str(k)] = {
        "eligible": len(eligible),
        "teacher_from_scratch": mean([r["teacher_score"] for r in eligible]),
        "teacher_from_prefix": mean([r["from_prefix"][str(k)] for r in eligible]),
        "diverged": len(left),
        "teacher_from_diverged_prefix": mean([r["from_prefix"][str(k)] for r in left]),
        "teacher_from_scratch_on_diverged": mean([r["teacher_score"] for r in left]),
        "student_on_diverged": mean([r["student_score"] for r in left])}
  tokens = sum(r["sample_tokens"] for r in rows)
  m = {
      "num_examples": len(rows),
      "teacher_score": mean([r["teacher_score"] for r in rows]),
      "student_score": mean([r["student_score"] for r in rows]),
      "agreement": {"exact": mean(div < 0),
                    "token": sum(r["token_agree"] for r in rows) / max(
                        sum(r["teacher_tokens"] for r in rows), 1)},
      "student_samples": {"nll_per_token": sum(r["sample_nll"] for r in rows) / max(tokens, 1),
                          "nll_per_sequence": mean([r["sample_nll"] for r in rows]),
                          "equals_greedy": mean([r["sample_equals_greedy"] for r in rows])},
      "first_divergence": {"never": mean(div < 0),
                           "histogram": np.bincount(div[div >= 0], minlength=max_position)
                           .tolist(),
                           "median_when_diverged": float(np.median(div[div >= 0]))
                           if (div >= 0).any() else None},
      "recovery": {"rate": mean(pooled), "pooled_prefixes": len(pooled), "by_prefix_length": recovery},
  }
  m.update(verdict(m, thresholds))
  return m


def verdict(m: dict, thresholds: dict = THRESHOLDS) -> dict:
  """{"verdict", "reasons", "thresholds"}: "cannot_rank" with the reasons that hold, else "can_rank"."""
  reasons = []
  if m["agreement"]["exact"] >= thresholds["same_path"]:
    reasons.append("same_path")
  if m["student_samples"]["equals_greedy"] >= thresholds["near_deterministic"]:
    reasons.append("near_deterministic")
  if m["recovery"]["pooled_prefixes"] < thresholds["min_diverged"]:
    reasons.append("too_few_divergences")
  elif m["recovery"]["rate"] < thresholds["unrecoverable"]:
    reasons.append("unrecoverable")
  return {"verdict": "cannot_rank" if reasons else "can_rank", "reasons": reasons,
          "thresholds": dict(thresholds)}


def setting(config) -> dict:
  """What gate.json measured: the task, both models and the student's sampler."""
  model = lambda m: {"source": m.source, "path": m.path, **m.llama.to_dict()}  # noqa: E731
  return {"task": config.data.task, "task_kwargs": pipeline.task_kwargs(config),
          "teacher": model(config.teacher), "student": model(config.student),
          "sampling": {k: config.sampling[k] for k in ("temperature", "top_k", "top_p")},
          "seed": config.seed}


def write(out_dir: str, report: dict, rows: list[dict]) -> str:
  """Writes OUT/gate.json and OUT/gate_examples.jsonl.gz; returns gate.json's path."""
  os.makedirs(out_dir, exist_ok=True)
  examples = os.path.join(out_dir, "gate_examples.jsonl.gz")
  with gzip.open(examples + ".tmp", "wt") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  os.replace(examples + ".tmp", examples)
  path = os.path.join(out_dir, "gate.json")
  atomic_write(path, json.dumps(report, indent=1) + "\n")
  return path


def main(argv):
  del argv
  from absl import flags
  from gkd.teachers.build import build_models

  f = flags.FLAGS
  config = f.config
  tokenizer, teacher, student = build_models(config)
  if teacher is None:
    raise UserError("The gate needs a config with a teacher model (mode='gkd', no teacher_store).")
  prefix_lengths = sorted(int(k) for k in f.prefix_lengths)
  gate = Gate(config, tokenizer, teacher, student, prefix_lengths=prefix_lengths)
  rows = gate.run(f.num_examples, f.batch_size or config.eval.batch_size)
  report = summarize(rows, prefix_lengths, max_position=config.data.max_response_len)
  report = {"setting": setting(config), "split": "validation", **report}
  path = write(f.out, report, rows)
  print(f"{path}: {report['verdict']} {report['reasons']} (agreement "
        f"{report['agreement']['exact']:.3f}, samples equal to greedy "
        f"{report['student_samples']['equals_greedy']:.3f}, recovery {report['recovery']['rate']})")


def cli():
  """The command line (`python -m gkd.eval.gate`; flags are defined here, not at import)."""
  from absl import flags
  from ml_collections import config_flags

  from gkd import cli as commands

  config_flags.DEFINE_config_file("config", None, "Experiment config (teacher, student, task).")
  flags.DEFINE_string("out", None, "Directory for gate.json (the sweep's workdir).")
  flags.DEFINE_integer("num_examples", 500, "Validation prompts measured.")
  flags.DEFINE_integer("batch_size", 0, "Prompts per batch (0: config.eval.batch_size).")
  flags.DEFINE_list("prefix_lengths", [str(k) for k in PREFIX_LENGTHS],
                    "Student prefix lengths k the teacher continues.")
  flags.mark_flags_as_required(["config", "out"])
  commands.run(main)


if __name__ == "__main__":
  cli()
