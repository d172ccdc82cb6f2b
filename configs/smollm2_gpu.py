"""SmolLM2-135M-Instruct → a derived 15-layer student, sized for one accelerator.

  python -m gkd.main --config=configs/smollm2_gpu.py --workdir=runs/smollm2_gpu
  python -m gkd.train.memory --config=configs/smollm2_gpu.py   # what it needs, per device

The student copies every 2nd teacher layer (DistilBERT's recipe) and is distilled fully
on-policy (λ=1) with JSD(0.5) on GSM8K-style reasoning prompts (chat template, 256+256 tokens),
8 samples per prompt (sampling.num_samples) at batch 64 (4 micro-batches of 16). Mixed precision: bf16 compute, float32
master weights and Adam state; bf16 teacher; the head and loss run in sequence chunks of 64
(no [B, T, V] float32 logits).

Memory (XLA's buffer assignment from abstract shapes, checked by tests/test_memory.py): at most
MEMORY_GIB = 16 GiB per device (measured 15.3 GiB on the CPU backend), i.e. one 16 GiB
accelerator (T4, V100-16G, a TPU v5e chip) or more; add devices with mesh.data to raise the batch. Expected cost on one H100: a few hours for
the default 2000 steps (not measured; CPU runs use `runlocal=true`).
"""

from gkd.train.defaults import default_config, parse_arg

MEMORY_GIB = 16  # the claim tests/test_memory.py checks


def get_config(arg=None):
  arg = parse_arg(arg, steps=2000, batch=64, num_samples=8, runlocal=False)
  c = default_config()
  c.teacher.update(source="gguf", dtype="bfloat16")  # the bundled SmolLM2-135M-Instruct
  c.student.update(source="derive", derive_every_k=2, dtype="bfloat16")  # float32 master weights
  c.data.update(task="gsm8k", chat_template=True, max_prompt_len=256, max_response_len=256)
  c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
  c.sampling.num_samples = arg.num_samples
  c.objective.update(divergence="generalized_jsd", divergence_kw={"beta": 0.5}, chunk_size=64)
  c.optim.update(learning_rate=5e-5, warmup_steps=50, weight_decay=0.01, grad_accum_steps=4)
  c.train.update(batch_size=arg.batch, num_steps=arg.steps, log_every=10, checkpoint_every=200)
  c.eval.update(every=500, at_start=True, num_examples=256, batch_size=64, max_new_tokens=256)
  if arg.runlocal:  # a CPU smoke run of the same wiring
    c.data.update(max_prompt_len=64, max_response_len=16, num_train_examples=64)
    c.sampling.num_samples = 2
    c.train.update(batch_size=4, num_steps=2, checkpoint_every=1)
    c.eval.update(every=0, at_start=False, num_examples=4, batch_size=4, max_new_tokens=8)
  return c
