"""Per-device memory of full fine-tuning against a LoRA student, at 1B scale, from abstract shapes.

  PYTHONPATH=. python experiments/results/lora_memory/measure.py > experiments/results/lora_memory/raw.txt

configs/teacher_1b.py (its SmolLM2-1.7B-shaped bf16 teacher, batch 32 in 4 micro-batches, 256 +
256 tokens), with the *student* also SmolLM2-1.7B-shaped (bf16 compute, float32 master
weights): trained in full, then as LoRA rank 16 on q,k,v,o,gate,up,down (alpha 32). XLA's
buffer assignment on this machine's CPU backend (gkd.train.memory); nothing is allocated.
"""

import subprocess
import sys

sys.path.insert(0, ".")
from configs import teacher_1b  # noqa: E402
from gkd.train import memory  # noqa: E402

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"commit {commit}; GiB per device (CPU backend's buffer assignment)")
rows = {}
for name, rank in (("full fine-tuning", 0), ("LoRA r=16", 16)):
  c = teacher_1b.get_config()
  c.student.update(source="init", preset="smollm2-1.7b", dtype="bfloat16")
  c.lora.update(rank=rank, alpha=32.0)
  rows[name] = memory.analyze(c)
keys = list(rows["LoRA r=16"])
print("| | " + " | ".join(keys) + " |")
print("|---|" + "---|" * len(keys))
for name, out in rows.items():
  print(f"| {name} | " + " | ".join(f"{out.get(k, 0) / memory.GiB:.2f}" for k in keys) + " |", flush=True)
