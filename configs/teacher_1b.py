"""A 1B-class Hugging Face Llama teacher (SmolLM2-1.7B) → SmolLM2-135M, for one accelerator.

  python -m gkd.main --config=configs/teacher_1b.py:teacher=/path/to/SmolLM2-1.7B-Instruct \\
      --workdir=runs/teacher_1b
  python -m gkd.train.memory --config=configs/teacher_1b.py   # what it needs, per device

The teacher is a Hugging Face directory (config.json + safetensors, LlamaForCausalLM); with
no `teacher=` it is a randomly initialized model of SmolLM2-1.7B's shape (llama.PRESETS), so
memory and throughput can be checked without the weights. The student is the bundled
SmolLM2-135M-Instruct GGUF (same 49152-token vocabulary and tokenizer). Mixed precision: the
teacher is stored and run in bf16 (3.4 GB); the student computes in bf16 over float32 master
weights and Adam state. On-policy JSD(0.5) with a quarter of the steps on dataset responses.

Memory (XLA's buffer assignment from abstract shapes, checked by tests/test_memory.py): at most
MEMORY_GIB = 32 GiB per device at batch 32 (4 micro-batches of 8) and 256+256 tokens; measured
24.4 GiB on the CPU backend, so one 32 GiB accelerator (V100-32G) or larger (A100, H100). With
mesh.fsdp > 1 the teacher and the optimizer state are split over the devices.
"""

from gkd.train.defaults import default_config, parse_arg

MEMORY_GIB = 32  # the claim tests/test_memory.py checks


def get_config(arg=None):
  arg = parse_arg(arg, teacher="", steps=2000, batch=32)
  c = default_config()
  if arg.teacher:
    c.teacher.update(source="pretrained", path=arg.teacher, dtype="bfloat16")
  else:
    c.teacher.update(source="init", preset="smollm2-1.7b", dtype="bfloat16")
  c.student.update(source="gguf", dtype="bfloat16")  # float32 master weights (param_dtype "")
  c.data.update(task="gsm8k", chat_template=True, max_prompt_len=256, max_response_len=256)
  c.mix.update(dataset=0.25, teacher=0.0, student=0.75)
  c.objective.update(divergence="generalized_jsd", divergence_kw={"beta": 0.5}, chunk_size=64)
  c.optim.update(learning_rate=5e-5, warmup_steps=50, weight_decay=0.01, grad_accum_steps=4)
  c.train.update(batch_size=arg.batch, num_steps=arg.steps, log_every=10, checkpoint_every=200)
  c.eval.update(every=500, at_start=True, num_examples=256, batch_size=32, max_new_tokens=256)
  return c
