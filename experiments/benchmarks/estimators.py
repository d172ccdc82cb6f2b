"""Device memory and time of one train step: the full reverse KL against the sampled-token estimator.

  python experiments/benchmarks/estimators.py [--workload smollm2|testbed] [--steps 3]
      [--out experiments/results/bench_estimators.jsonl]

Workloads: `smollm2`, a teacher of SmolLM2-135M's shape (30 layers, d=576, V=49,152; random
weights, float32) and a random 4-layer d=256 student sharing its vocabulary, as
experiments/benchmarks/gkd_step.py; `testbed`, the v3 testbed's teacher and student shapes
(V=101). Batch `--batch` rows of `--prompt` prompt and `--response` response tokens, all real.

Variants (one jitted `gkd.train.step.train_step` each, AdamW):
  full            the reverse KL over the vocabulary, the teacher model in the step
  full_chunked    the same with objective.chunk_size=16 (no [B, R, V] logits)
  sampled         the sampled-token estimator, the teacher model in the step (it scores tokens)
  sampled_chunked the same with chunk_size=16 for the student's log-probs
  scorer          the sampled-token estimator with a scoring-server teacher: its log-probs come
                  in the batch, so no teacher weights or teacher pass are on the device
For each: XLA's memory analysis of the compiled step (arguments, outputs, temporaries; peak ≈
args + outputs − aliased + temp) with the teacher's resident weights apart, the compile time and
the median wall time of `--steps` steps after one warm-up. Prints a table and appends one JSON
line (machine, load, commit) to `--out`.
"""

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from gkd import divergences, scoring, teachers  # noqa: E402
from gkd.models import llama  # noqa: E402
from gkd.objectives import Objective  # noqa: E402
from gkd.teachers.scorer import SCORES, Scorer  # noqa: E402
from gkd.train import step as step_lib  # noqa: E402
from gkd.train.optimizer import make_optimizer  # noqa: E402

WORKLOADS = {
    "smollm2": (dict(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                     ffn_dim=1536, max_seq_len=2048),
                dict(vocab_size=49152, dim=256, n_layers=4, n_heads=4, n_kv_heads=2,
                     ffn_dim=768, max_seq_len=2048)),
    "testbed": (dict(vocab_size=101, dim=192, n_layers=4, n_heads=6, n_kv_heads=2, ffn_dim=512,
                     max_seq_len=128),
                dict(vocab_size=101, dim=96, n_layers=2, n_heads=3, n_kv_heads=1, ffn_dim=256,
                     max_seq_len=128)),
}
VARIANTS = ("full", "full_chunked", "sampled", "sampled_chunked", "scorer")
MiB = 2**20


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", choices=sorted(WORKLOADS), default="smollm2")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt", type=int, default=32)
  parser.add_argument("--response", type=int, default=128)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  t_cfg, s_cfg = WORKLOADS[args.workload]
  teacher = llama.Llama(llama.LlamaConfig(**t_cfg), rngs=nnx.Rngs(1))
  student = llama.Llama(llama.LlamaConfig(**s_cfg), rngs=nnx.Rngs(0))
  t_graph, t_state = nnx.split(teacher)
  s_graph, s_state = nnx.split(student)
  t_params = t_state.to_pure_dict()
  v, b, p, r = t_cfg["vocab_size"], args.batch, args.prompt, args.response
  rng = np.random.default_rng(0)
  batch = {"prompt_tokens": jnp.asarray(rng.integers(1, v, (b, p)), jnp.int32),
           "prompt_mask": jnp.ones((b, p), bool),
           "response_tokens": jnp.asarray(rng.integers(1, v, (b, r)), jnp.int32),
           "response_mask": jnp.ones((b, r), bool)}
  optimizer = make_optimizer(_optim(), 1000)
  rows = []
  print(f"workload {args.workload}: teacher {llama.count_params(teacher) / 1e6:.1f}M, student "
        f"{llama.count_params(student) / 1e6:.1f}M params, B={b} P={p} R={r} V={v}, "
        f"{jax.default_backend()}; one float32 [B,R,V] = {b * r * v * 4 / MiB:,.0f} MiB",
        flush=True)
  print(f"{'variant':<16}{'args MiB':>10}{'out MiB':>9}{'temp MiB':>10}{'peak MiB':>10}"
        f"{'teacher MiB':>12}{'compile s':>10}{'step s':>8}", flush=True)
  for name in args.variants.split(","):
    sampled = name != "full" and name != "full_chunked"
    objective = Objective(divergence=divergences.get("reverse_kl"),
                          chunk_size=16 if name.endswith("chunked") else 0,
                          estimator="sampled_token" if sampled else "full")
    if name == "scorer":
      teacher_kind, teacher_params = Scorer(), None
      step_batch = dict(batch, **{SCORES: scoring.token_scores(teacher, batch)})
    else:
      teacher_kind, teacher_params, step_batch = teachers.Live(t_graph), t_params, batch
    params = {"student": jax.tree.map(jnp.copy, s_state.to_pure_dict())}  # donated below
    state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    step = jax.jit(functools.partial(step_lib.train_step, student_graph=s_graph,
                                     teacher=teacher_kind, objective=objective,
                                     optimizer=optimizer), donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, step_batch, teacher_params).compile()
    compile_s = time.perf_counter() - start
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes \
        + m.temp_size_in_bytes
    state, metrics = compiled(state, step_batch, teacher_params)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
      start = time.perf_counter()
      state, metrics = compiled(state, step_batch, teacher_params)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
    row = {"variant": name, "args_mib": m.argument_size_in_bytes / MiB,
           "out_mib": m.output_size_in_bytes / MiB, "temp_mib": m.temp_size_in_bytes / MiB,
           "peak_mib": peak / MiB, "teacher_weights_mib": nbytes(teacher_params) / MiB,
           "compile_s": compile_s, "step_s": statistics.median(times), "step_s_all": times}
    rows.append(row)
    print(f"{name:<16}{row['args_mib']:>10,.0f}{row['out_mib']:>9,.0f}{row['temp_mib']:>10,.0f}"
          f"{row['peak_mib']:>10,.0f}{row['teacher_weights_mib']:>12,.0f}{compile_s:>10.1f}"
          f"{row['step_s']:>8.3f}", flush=True)
  if args.out:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    record = {"benchmark": "estimators", "workload": args.workload, "batch": b, "prompt": p,
              "response": r, "steps": args.steps, "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0],
              "backend": jax.default_backend(), "commit": commit, "rows": rows}
    with open(args.out, "a") as f:
      f.write(json.dumps(record) + "\n")


def _optim():
  import ml_collections
  return ml_collections.ConfigDict({"learning_rate": 1e-4, "schedule": "constant",
                                    "warmup_steps": 0, "weight_decay": 0.0, "b1": 0.9,
                                    "b2": 0.95, "grad_clip": 1.0, "grad_accum_steps": 1})


if __name__ == "__main__":
  main()
