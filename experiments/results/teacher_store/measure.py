"""Teacher-store cost per token at k = 8, 64, 256, and the top-k divergence's gap to the full one.

  PYTHONPATH=. python experiments/results/teacher_store/measure.py > experiments/results/teacher_store/raw.txt

The teacher is SmolLM2-135M-Instruct (vocabulary 49,152) on chat-formatted arithmetic training
prompts with their reference responses (configs/demo.py's data). Disk: the store's files over
its response tokens, on 512 prompts (array_record pads files to 64 KiB blocks, so small stores
cost more per token). Memory: what a batch row carries per response token (f32 log-probs + int32
ids, as the train step receives them). The gap is measured on 64 prompts for two students: the
demo's 10-layer cut of the teacher untrained (far from it), and the same after the demo's 20
distillation steps (`python -m gkd.main --config=configs/demo.py --workdir=runs/demo_for_store_gap`,
read from there when it exists).
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
from gkd import divergences, scoring  # noqa: E402
from gkd.data.pipeline import loader_for_config  # noqa: E402
from gkd.teachers import store
from gkd.teachers import store_writer as teacher_store
from gkd.teachers.build import build_all  # noqa: E402

N, N_GAP = 512, 64
config = demo.get_config()
config.data.num_train_examples = N
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.processor())
print(f"commit {commit}; CPU {cpu}; SmolLM2-135M-Instruct teacher on {config.data.task}")

tokenizer, _, teacher, student = build_all(config)
print(f"\n{N} prompts\n| k | disk bytes / response token | batch memory bytes / response token | write s |")
print("|---|---|---|---|")
import time

with tempfile.TemporaryDirectory() as tmp:
  for k in (8, 64, 256):
    out = os.path.join(tmp, f"k{k}")
    start = time.perf_counter()
    teacher_store.write(config, out, kind="dataset", topk=k, shard_examples=N, batch_size=16)
    seconds = time.perf_counter() - start
    opened = store.TeacherStore(out)
    tokens = sum(len(opened.read(key)["tokens"]) for key in range(N))
    disk = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "shard-*")))
    print(f"| {k} | {disk / tokens:.0f} | {k * 8} | {seconds:.1f} |", flush=True)

t_graph, t_params = nnx.split(teacher)
students = {"10-layer cut, untrained": student}
trained = "runs/demo_for_store_gap/export"
if os.path.exists(trained):
  from gkd import models
  students["10-layer cut after the demo's 20 steps"] = models.load_pretrained(trained)[0]
cases = [("forward_kl", {}), ("reverse_kl", {}), ("generalized_jsd", {"beta": 0.5}),
         ("total_variation", {})]
ks = (8, 64, 256, 1024)
for who, model in students.items():
  s_graph, s_params = nnx.split(model)

  @jax.jit
  def logits(tp, sp, batch):
    return (scoring.response_logits(nnx.merge(t_graph, tp), batch),
            scoring.response_logits(nnx.merge(s_graph, sp), batch))

  loader = loader_for_config(config, tokenizer, split="train", batch_size=16, shuffle=False,
                             num_epochs=1, num_examples=N_GAP)
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
  print(f"\nStudent: {who}. Per response token ({count} tokens of {N_GAP} prompts): the top-k "
        "value, and how far below the full one it is (top-k never exceeds it)")
  print("| divergence | full | " + " | ".join(f"k={k}" for k in ks) + " |")
  print("|---|---|" + "---|" * len(ks))
  for name, _ in cases:
    full = sums[(name, "full")] / count
    cells = [f"{sums[(name, k)] / count:.4f} ({100 * (1 - sums[(name, k)] / sums[(name, 'full')]):.1f}%)"
             for k in ks]
    print(f"| {name} | {full:.4f} | " + " | ".join(cells) + " |", flush=True)
