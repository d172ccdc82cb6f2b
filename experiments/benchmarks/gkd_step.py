"""Throughput of the fully on-policy GKD step (λ=1, JSD(0.5)) with the real SmolLM2 teacher.

  python experiments/benchmarks/gkd_step.py [--steps 5] [--batch 8] [--new_tokens 64]

Workload (the same as experiments/benchmarks/trl_gkd_reference.py, for the side-by-side ratio):
teacher SmolLM2-135M-Instruct (GGUF, dequantized to float32), student a random 4-layer d=256
Llama sharing its tokenizer, batch 8 chat-formatted prompts from prompts.jsonl, 64 new tokens
sampled from the student at T=1, generalized JSD β=0.5, AdamW. Prints one JSON line with
seconds per step, generated and trained tokens/s and the split between sampling, teacher
scoring and the update (each phase timed to completion with block_until_ready, compile
excluded by a warm-up step). Cost: about a minute on a 2-core CPU plus model loading.
"""

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gkd import sampling
from gkd.models import gguf, llama
from gkd.train import step as step_lib

HERE = os.path.dirname(os.path.abspath(__file__))


def prompts_batch(tokenizer, batch: int):
  """The first `batch` prompts, tokenized exactly as the TRL side sees them, left-padded."""
  with open(os.path.join(HERE, "prompts.jsonl")) as f:
    ids = [json.loads(line)["prompt_ids"] for line in f][:batch]
  width = max(map(len, ids))
  tokens = np.full((batch, width), tokenizer.pad_id, np.int32)
  mask = np.zeros((batch, width), bool)
  for i, row in enumerate(ids):
    tokens[i, width - len(row):], mask[i, width - len(row):] = row, True
  return tokens, mask


def timed(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--chunk", type=int, default=0, help="objective.chunk_size (0: plain loss)")
  args = parser.parse_args()

  teacher, tokenizer = gguf.load_gguf()
  student = llama.Llama(llama.LlamaConfig(
      vocab_size=teacher.config.vocab_size, dim=256, n_layers=4, n_heads=4, n_kv_heads=2,
      ffn_dim=768, max_seq_len=2048, rope_theta=100000.0), rngs=nnx.Rngs(0))
  prompt_tokens, prompt_mask = prompts_batch(tokenizer, args.batch)

  sg, ss = nnx.split(student)
  tg, ts = nnx.split(teacher)
  teacher_params = ts.to_pure_dict()
  objective = step_lib.Objective(divergence="generalized_jsd", divergence_params=(("beta", 0.5),),
                                 chunk_size=args.chunk)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4))  # as TRL's defaults
  params = {"student": ss.to_pure_dict()}
  state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  train_step = jax.jit(functools.partial(step_lib.train_step, student_graph=sg, teacher_graph=tg,
                                         objective=objective, optimizer=optimizer), donate_argnums=0)
  teacher_scores = jax.jit(lambda p, b: step_lib.token_scores(nnx.merge(tg, p), b))

  rows = []
  for i in range(args.steps + 1):  # step 0 compiles
    model = nnx.merge(sg, state.params["student"])
    out, t_sample = timed(lambda: sampling.sample(
        model, prompt_tokens, prompt_mask, rng=jax.random.key(i), max_new_tokens=args.new_tokens,
        temperature=1.0, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id))
    batch = {"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask,
             "response_tokens": out.tokens, "response_mask": out.mask}
    _, t_teacher = timed(teacher_scores, teacher_params, batch)
    (state, metrics), t_step = timed(train_step, state, batch, teacher_params)
    rows.append({"sample_s": t_sample, "teacher_s": t_teacher, "step_s": t_step,
                 "generated": int(np.sum(out.mask)), "loss": float(metrics["loss"])})
  rows = rows[1:]
  med = {k: statistics.median(r[k] for r in rows) for k in ("sample_s", "teacher_s", "step_s")}
  total = med["sample_s"] + med["step_s"]  # the step includes teacher scoring and the update
  generated = statistics.median(r["generated"] for r in rows)
  print(json.dumps({
      "impl": "gkd-jax", "device": jax.devices()[0].device_kind, "batch": args.batch,
      "new_tokens": args.new_tokens, "chunk": args.chunk, "seconds_per_step": total,
      "generated_tokens_per_s": generated / med["sample_s"],
      "train_tokens_per_s": generated / total,
      "split_s": {"sampling": med["sample_s"], "teacher_scoring": med["teacher_s"],
                  "update": med["step_s"] - med["teacher_s"]},
      "prompt_len": int(prompt_tokens.shape[1]), "jax": jax.__version__,
      "losses": [round(r["loss"], 4) for r in rows]}))


if __name__ == "__main__":
  main()
