"""The short summary a run prints when it ends: what ran, where its outputs are, what moved.

"Before" is the evaluation at step 0 (`eval.at_start`), "after" the final one. The example
shows one held-out prompt with the reference, the teacher's and the student's greedy
completions, so a reader sees what distillation did to the text, not only to the numbers.
"""

import os

import jax
import jax.numpy as jnp

from gkd import rundir, sampling, sources
from gkd.data.pipeline import encode_example
from gkd.models import llama
from gkd.teachers.build import teacher_configs

ROWS = (  # (metric, label): the rows shown when both runs measured them
    ("forward_kl", "held-out KL(teacher‖student)"),
    ("reverse_kl", "held-out KL(student‖teacher)"),
    ("teacher_logprob_of_samples", "teacher log p of student samples"),
    ("nll", "student NLL of references"),
    ("accuracy", "accuracy (greedy)"),
    ("rougeL", "ROUGE-L (greedy)"),
)


def _describe(model_cfg) -> str:
  if model_cfg.source == "init":
    return f"a random {dict(model_cfg.llama) or model_cfg.preset}"
  if model_cfg.source == "derive":
    if model_cfg.derive_every_k:
      return f"a student of every {model_cfg.derive_every_k}th teacher layer"
    return f"a student of teacher layers {list(model_cfg.derive_layers)}"
  return f"{model_cfg.source} {model_cfg.path or 'SmolLM2-135M-Instruct (bundled)'}"


def _describe_teachers(config) -> str:
  if config.get("teacher_store", ""):
    return f"the teacher store {config.teacher_store}"
  listed = teacher_configs(config)
  more = f" and {len(listed) - 1} more teacher(s)" if len(listed) > 1 else ""
  return _describe(listed[0]) + more


def _describe_loss(objective) -> str:
  if objective.get("cross_tokenizer", "") == "uld":
    return f"ULD (cross-tokenizer), alpha {objective.alpha}"
  return f"divergence {objective.divergence} {dict(objective.divergence_kw) or ''}"


def teacher_completion(config, tokenizer, teacher_graph, teacher_params, prompt: str) -> str:
  """The teacher's greedy completion of one prompt, encoded as the loaders encode it."""
  row = encode_example(tokenizer, prompt, "", max_prompt_len=config.data.max_prompt_len,
                       max_response_len=1, chat_template=config.data.chat_template)
  sampler = sampling.Sampler(teacher_graph, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  out = sampler(teacher_params, jnp.asarray(row["prompt_tokens"][None]),
                jnp.asarray(row["prompt_mask"][None]), rng=jax.random.key(0),
                max_new_tokens=config.eval.max_new_tokens or config.data.max_response_len,
                temperature=0.0)
  return tokenizer.decode(out.tokens[0][out.mask[0]])


def summary(config, workdir: str, history: list[dict], example: dict, sizes: dict) -> str:
  """The report text. `history` holds metrics.jsonl rows, `example` the first held-out
  example with its "prompt", "response", "student" and (with a teacher) "teacher" texts,
  `sizes` the parameter counts by role."""
  evals = [r for r in history if any(k.startswith("eval/") for k in r)]
  before, after = (evals[0], evals[-1]) if len(evals) > 1 else ({}, evals[-1] if evals else {})
  what = "fine-tuned (SFT)" if config.mode == "sft" else "distilled into"
  size = {role: f" ({n / 1e6:.2f}M params)" for role, n in sizes.items()}
  lines = [f"gkd: {config.train.num_steps} steps, {what} {_describe(config.student)}{size['student']}"
           + ("" if config.mode == "sft" else
              f" from {_describe_teachers(config)}{size.get('teacher', '')}")
           + f"; {sources.describe(config)}; {_describe_loss(config.objective)}",
           f"  outputs in {workdir}: {rundir.METRICS}, {rundir.TENSORBOARD}/, "
           f"{rundir.CHECKPOINTS}/, {rundir.FINAL_METRICS}, {rundir.EVAL_EXAMPLES}, "
           f"{rundir.EXPORT}/ (Hugging Face format)",
           f"  {'':34}{'before':>10}{'after':>10}"]
  for key, label in ROWS:
    if f"eval/{key}" in after:
      was = before.get(f"eval/{key}")
      lines.append(f"  {label:34}{'' if was is None else f'{was:10.4f}':>10}"
                   f"{after[f'eval/{key}']:10.4f}")
  lines.append(f"  example prompt: {example['prompt']!r}")
  for who in ("response", "teacher", "student"):
    if who in example:
      lines.append(f"  {'reference' if who == 'response' else who:>9}: {example[who]!r}")
  return "\n".join(lines)


def print_summary(run, workdir: str, result) -> None:
  """Prints `summary` for a finished run (process 0 only)."""
  first = result.examples[0] if result.examples else None
  if first is None:
    return
  raw = run.evaluator.examples[first["example_id"]]
  example = {"prompt": raw["prompt"], "response": raw["response"], "student": first["completion"]}
  generator = run.teacher.generator(run.teacher_params)
  if generator is not None:
    example["teacher"] = teacher_completion(run.config, run.tokenizer, *generator, raw["prompt"])
  sizes = {"student": llama.count_params(run.student())}
  if run.teacher.modules(run.teacher_params):
    sizes["teacher"] = sum(llama.count_params(t) for t in run.teacher.modules(run.teacher_params))
  print(summary(run.config, workdir, rundir.read_jsonl(os.path.join(workdir, rundir.METRICS)),
                example, sizes), flush=True)
