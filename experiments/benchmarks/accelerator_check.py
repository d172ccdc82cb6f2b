"""A few steps of an accelerator config, timed: step time, tokens/s, model FLOPs utilisation, peak memory.

  python experiments/benchmarks/accelerator_check.py [--config configs/smollm2_gpu.py[:ARG]]
      [--steps 3] [--set train.batch_size=16 ...] [--out experiments/results/accelerator_check.jsonl]

Builds the config's run (gkd.train.run.Run: models, teacher, data, batch sources, the jitted train
step) in a temporary workdir with evaluation and checkpoints off, runs one warm-up step (it
compiles the sampler and the train step) and `--steps` timed steps, and prints one table and one
JSON line (appended to `--out` when given). Per timed step it times making the batch (on-policy
sampling) and the train step apart, both to completion. Meant for one GPU or TPU host in under 5
minutes with the defaults (`configs/smollm2_gpu.py`: batch 64, 256+256 tokens, 8 samples per
prompt, bf16); `--set` overrides any config field as --config.x=y would (the CPU test runs it
with tiny models in seconds).

Model FLOPs count the matrix products per processed token (2 x weights forward, 6 x for the
student's forward and backward, the teacher forward only, plus attention's QK^T and PV over the
whole sequence, as the masked products compute it) for the train step's padded [batch, prompt + response] positions and for every decode
step of the sampler; padding the trim leaves is counted as work done. MFU is model FLOPs per
second over the chip's peak for the compute dtype: the vendor's dense figure where the device kind
is in PEAK_FLOPS, and always also against a large matmul measured in this process.
"""

import argparse
import ast
import importlib.util
import json
import os
import resource
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import roofline as R  # noqa: E402

# Dense peak FLOP/s per chip for bf16 (float32 inputs use the TF32/fp32 peak where given), from the
# vendors' data sheets; a device kind not listed is judged against the measured matmul only.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989e12, "float32": 67e12},
    "NVIDIA H100 PCIe": {"bfloat16": 756e12, "float32": 51e12},
    "NVIDIA H200": {"bfloat16": 989e12, "float32": 67e12},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "float32": 19.5e12},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312e12, "float32": 19.5e12},
    "NVIDIA L4": {"bfloat16": 121e12, "float32": 30e12},
    "Tesla T4": {"float16": 65e12, "float32": 8.1e12},
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},
    "TPU v5e": {"bfloat16": 197e12},
    "TPU v5p": {"bfloat16": 459e12},
    "TPU v6 lite": {"bfloat16": 918e12},
}


def load_config(spec: str, overrides: list[str]):
  """configs/NAME.py[:ARG] with `key=value` overrides (values parsed as Python literals)."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("accelerator_check_config", os.path.join(REPO, path)
                                                       if not os.path.isabs(path) else path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for item in overrides:
    dotted, sep, raw = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected key=value")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw  # a bare string
    node, (*parents, leaf) = config, dotted.split(".")
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise SystemExit(f"--set {item!r}: the config has no field {dotted!r}")
    node[leaf] = value
  config.eval.update(every=0, at_start=False)
  config.train.update(checkpoint_every=0, progress_bar=False)
  return config


def token_flops(cfg, context: float) -> float:
  """Forward FLOPs of one token of a Llama with `context` keys: weights and attention."""
  d, hd, layers = cfg.dim, cfg.hd, cfg.n_layers
  weights = layers * (d * cfg.n_heads * hd * 2 + 2 * d * cfg.n_kv_heads * hd + 3 * d * cfg.ffn_dim)
  weights += cfg.vocab_size * d  # the head
  attention = layers * 2 * 2 * cfg.n_heads * hd * context  # QK^T and PV
  return 2 * weights + attention


def measured_matmul(dtype, n: int) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  return 2 * n ** 3 / R.best_time(f, a, a, repeats=3)


def peak_memory_bytes() -> tuple[int, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host peak RSS"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/smollm2_gpu.py")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--matmul_n", type=int, default=0, help="size of the measured matmul "
                      "(0: 8192 on an accelerator, 1024 on CPU)")
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  from gkd.train.run import Run

  t_start = time.perf_counter()
  config = load_config(args.config, args.set)
  host = R.machine()
  device = jax.devices()[0]
  with tempfile.TemporaryDirectory() as workdir:
    run = Run(config, workdir)
    t_built = time.perf_counter()
    rows = []
    with jax.set_mesh(run.mesh):
      for step in range(args.steps + 1):
        source = run.source_for_step(step)
        t0 = time.perf_counter()
        batch = jax.block_until_ready(run.make_batch(step, source))
        t1 = time.perf_counter()
        run.state, metrics = run.train_step(run.state, batch, run.teacher_params, run.student_base)
        metrics = jax.device_get(metrics)
        t2 = time.perf_counter()
        rows.append({"source": source, "batch_s": t1 - t0, "train_step_s": t2 - t1,
                     "rows": int(batch["response_tokens"].shape[0]),
                     "prompt_len": int(batch["prompt_tokens"].shape[1]),
                     "response_len": int(batch["response_tokens"].shape[1]),
                     "response_tokens": int(np.sum(np.asarray(batch["response_mask"]))),
                     "loss": float(metrics["loss"])})
    student_cfg = run.student().config
    teacher_cfgs = [m.config for m in run.teacher.modules(run.teacher_params)]
    memory, memory_kind = peak_memory_bytes()
  timed = rows[1:]
  dtype = student_cfg.dtype
  flops = []
  for r in timed:
    positions = r["rows"] * (r["prompt_len"] + r["response_len"])
    context = r["prompt_len"] + r["response_len"]  # masked scores are computed too
    train = positions * (3 * token_flops(student_cfg, context)
                         + sum(token_flops(t, context) for t in teacher_cfgs))
    # The sampler runs max_response_len decode steps at most; a trimmed batch ran response_len.
    decode = r["rows"] * r["response_len"] * token_flops(student_cfg, context) \
        if r["source"] == "student" else 0.0
    flops.append(train + decode)
  step_s = [r["batch_s"] + r["train_step_s"] for r in timed]
  n = args.matmul_n or (1024 if device.platform == "cpu" else 8192)
  matmul = measured_matmul(jnp.dtype(dtype), n)
  spec = PEAK_FLOPS.get(device.device_kind, {}).get(dtype)
  achieved = sum(flops) / sum(step_s)
  record = {
      "impl": "gkd-jax", "config": args.config, "overrides": args.set, **host,
      "platform": device.platform, "device_kind": device.device_kind, "devices": jax.device_count(),
      "dtype": dtype, "steps": timed, "seconds_per_step": statistics.median(step_s),
      "sampling_s": statistics.median(r["batch_s"] for r in timed),
      "train_step_s": statistics.median(r["train_step_s"] for r in timed),
      "compile_and_first_step_s": rows[0]["batch_s"] + rows[0]["train_step_s"],
      "build_s": t_built - t_start,
      "train_tokens_per_s": sum(r["rows"] * (r["prompt_len"] + r["response_len"]) for r in timed) / sum(step_s),
      "generated_tokens_per_s": sum(r["response_tokens"] for r in timed if r["source"] == "student") / sum(step_s),
      "model_flops_per_step": statistics.median(flops), "model_flops_per_s": achieved,
      "measured_matmul_flops_per_s": matmul, "matmul_n": n, "spec_peak_flops_per_s": spec,
      "mfu_vs_spec": achieved / spec if spec else None, "mfu_vs_measured_matmul": achieved / matmul,
      "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
      "total_wall_s": time.perf_counter() - t_start}
  print_table(record)
  line = json.dumps(record)
  print(line)
  if args.out:
    with open(args.out, "a") as f:
      f.write(line + "\n")
  return record


def print_table(r):
  err = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
  err(f"{r['device_kind']} x{r['devices']} ({r['platform']}), {r['dtype']}, {r['config']} {r['overrides']}")
  err(f"step {r['seconds_per_step']:.3f} s (sampling {r['sampling_s']:.3f} s, train step "
      f"{r['train_step_s']:.3f} s), first step with compile {r['compile_and_first_step_s']:.1f} s")
  err(f"tokens/s: train {r['train_tokens_per_s']:.0f}, generated {r['generated_tokens_per_s']:.0f}")
  spec = f"{r['mfu_vs_spec']:.1%} of the spec peak, " if r["mfu_vs_spec"] else "no spec peak known, "
  err(f"model FLOPs {r['model_flops_per_s'] / 1e12:.2f} TFLOP/s: MFU {spec}"
      f"{r['mfu_vs_measured_matmul']:.1%} of a measured {r['matmul_n']}^2 matmul "
      f"({r['measured_matmul_flops_per_s'] / 1e12:.2f} TFLOP/s)")
  err(f"peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory_kind']}); "
      f"total {r['total_wall_s']:.0f} s")


if __name__ == "__main__":
  main()
