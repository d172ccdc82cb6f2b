"""Teacher-store cost per token at k = 8, 64, 256, and the top-k divergence's gap to the full one.

  PYTHONPATH=. python experiments/results/teacher_store/measure.py > experiments/results/teacher_store/raw.txt

The teacher is SmolLM2-135M-Instruct (vocabulary 49,152) on 64 chat-formatted arithmetic training
prompts with their reference responses (configs/demo.py's data), the student the demo's
10-layer cut of it, untrained (far from its teacher: the gap is shown relative to the full value).
Disk: the store's files over its response tokens. Memory: what a batch row carries per response
token (f32 log-probs + int32 ids, as the train step receives them).
"""

import glob
import os
import platform
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, ".")
from configs import demo  # noqa: E402
from gkd import divergences, scoring, teacher_store  # noqa: E402
from gkd.data.pipeline import loader_for_config  # noqa: E402
from gkd.train.build_models import build_all  # noqa: E402

N = 64
config = demo.get_config()
config.data.num_train_examples = N
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.processor())
print(f"commit {commit}; CPU {cpu}; {N} prompts of {config.data.task}, SmolLM2-135M-Instruct teacher")

tokenizer, _, teacher, student = build_all(config)
print("\n| k | disk bytes / response token | batch memory bytes / response token | write s |")
print("|---|---|---|---|")
import time
with tempfile.TemporaryDirectory() as tmp:
  for k in (8, 64, 256):
    out = os.path.join(tmp, f"k{k}")
    start = time.perf_counter()
    teacher_store.write(config, out, kind="dataset", topk=k, shard_examples=32, batch_size=16)
    seconds = time.perf_counter() - start
    store = teacher_store.TeacherStore(out)
    tokens = sum(len(store.read(key)["tokens"]) for key in range(N))
    disk = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "shard-*")))
    print(f"| {k} | {disk / tokens:.0f} | {k * 8} | {seconds:.1f} |", flush=True)

loader = loader_for_config(config, tokenizer, split="train", batch_size=16, shuffle=False,
                           num_epochs=1, num_examples=N)
t_graph, t_params = nnx.split(teacher)
s_graph, s_params = nnx.split(student)


@jax.jit
def logits(tp, sp, batch):
  return (scoring.response_logits(nnx.merge(t_graph, tp), batch),
          scoring.response_logits(nnx.merge(s_graph, sp), batch))


cases = [("forward_kl", {}), ("reverse_kl", {}), ("generalized_jsd", {"beta": 0.5}),
         ("total_variation", {})]
ks = (8, 64, 256, 1024)
sums = {(name, k): 0.0 for name, _ in cases for k in (*ks, "full")}
count = 0
for batch in loader:
  batch = {key: jnp.asarray(batch[key]) for key in scoring.BATCH_KEYS}
  zt, zs = logits(t_params, s_params, batch)
  mask = np.asarray(batch["response_mask"])
  count += mask.sum()
  for name, kw in cases:
    d = divergences.get(name, **kw)
    sums[(name, "full")] += float((np.asarray(d(student_logits=zs, teacher_logits=zt)) * mask).sum())
    for k in ks:
      lp, idx = divergences.teacher_topk(zt, k)
      v = d.topk(student_logits=zs, topk_logprobs=lp, topk_indices=idx)
      sums[(name, k)] += float((np.asarray(v) * mask).sum())
print(f"\nPer response token ({count} tokens): the top-k value, and its gap to the full one "
      "(a lower bound: the top-k value never exceeds the full one)")
print("| divergence | full | " + " | ".join(f"k={k}" for k in ks) + " |")
print("|---|---|" + "---|" * len(ks))
for name, _ in cases:
  full = sums[(name, "full")] / count
  cells = [f"{sums[(name, k)] / count:.4f} ({100 * (1 - sums[(name, k)] / sums[(name, 'full')]):.1f}% below)"
           for k in ks]
  print(f"| {name} | {full:.4f} | " + " | ".join(cells) + " |")
