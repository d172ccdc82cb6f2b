"""EasyDeL's GKDTrainer (a JAX peer) on the side-by-side workload, in its own venv.

  python3 -m venv .venv-easydel && .venv-easydel/bin/pip install easydel==0.3.0
  .venv-trl/bin/python experiments/benchmarks/trl_gkd_reference.py --prepare   # the tokenizer dir
  .venv-easydel/bin/python experiments/benchmarks/easydel_gkd.py [--timed-steps 2] [--batch 8]
      [--max-new-tokens 64] [--student 4x256]

Same workload as trl_gkd_reference.py and gkd_step.py: prompts.jsonl's chat prompts, a random
student from students.py, on-policy (lmbda=1) generalized JSD beta=0.5 at T=1, AdamW lr 1e-4,
float32. The teacher has SmolLM2-135M-Instruct's shape with random weights: EasyDeL 0.3 loads
Hugging Face weights through torch, which its venv does not have, and the weights do not change
a step's cost here (the random student decides the lengths, and it never emits EOS). One warm-up
step (compiles) and `--timed-steps` timed steps, timed from EasyDeL's on_step_start to
on_step_end hooks; prints one JSON line. EasyDeL's trainer falls back to the dataset batch when
generation fails, so every timed step must show one student generation, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from students import hf_config  # noqa: E402

TEACHER = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
               intermediate_size=1536, tie_word_embeddings=True, rope_theta=100000.0)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--timed-steps", type=int, default=2)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--max-new-tokens", type=int, default=64)
  p.add_argument("--student", default="4x256")
  args = p.parse_args()

  import datasets
  import easydel as ed
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from transformers import AutoTokenizer, GenerationConfig

  tokenizer = AutoTokenizer.from_pretrained(REPO / ".cache" / "smollm2-135m-instruct-hf")
  rows = [json.loads(line) for line in (HERE / "prompts.jsonl").read_text().splitlines() if line.strip()]
  # Pre-tokenized with the prompts apart: EasyDeL 0.3's GKDTrainer finds the prompts of an on-policy
  # batch only in prompt_input_ids (or completion_mask / labels), which its conversational
  # preprocessing does not give it (SFTTrainer adds completion_mask in the _preprocess_batch_input
  # that GKDTrainer overrides), so a "messages" dataset silently trains off-policy.
  width = max(len(r["prompt_ids"]) for r in rows)
  total = width + args.max_new_tokens

  def example(r):
    pad = [tokenizer.pad_token_id] * (width - len(r["prompt_ids"]))
    prompt, prompt_mask = pad + r["prompt_ids"], [0] * len(pad) + [1] * len(r["prompt_ids"])
    answer = tokenizer(r["messages"][-1]["content"], add_special_tokens=False)["input_ids"]
    answer = (answer + [tokenizer.eos_token_id])[:args.max_new_tokens]
    tail = [tokenizer.pad_token_id] * (args.max_new_tokens - len(answer))
    return {"input_ids": prompt + answer + tail, "attention_mask": prompt_mask + [1] * len(answer) + [0] * len(tail),
            "completion_mask": [0] * width + [1] * len(answer) + [0] * len(tail),
            "prompt_input_ids": prompt, "prompt_attention_mask": prompt_mask}

  dataset = datasets.Dataset.from_list([example(r) for r in rows])

  def model(fields, seed):
    config = ed.LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, rms_norm_eps=1e-5,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, **fields)
    module = ed.LlamaForCausalLM(config=config, dtype=jnp.float32, param_dtype=jnp.float32,
                                 rngs=nnx.Rngs(seed))
    # from_pretrained would set it; EasyDeL's generate reads it (without it generation fails and
    # the trainer trains off-policy).
    module.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id)
    return module

  student, teacher = model(hf_config(args.student), 0), model(TEACHER, 1)
  steps, gens = [], []

  class Timed(ed.GKDTrainer):
    def on_step_start(self, state, step):
      jax.block_until_ready(state)
      self._t0, self._gens = time.perf_counter(), len(gens)
      return super().on_step_start(state=state, step=step)

    def on_step_end(self, state, metrics, step):
      state, metrics = super().on_step_end(state=state, metrics=metrics, step=step)
      jax.block_until_ready(state)
      steps.append({"seconds": time.perf_counter() - self._t0, "gen_calls": len(gens) - self._gens})
      return state, metrics

    def _apply_generation(self, generator_state, batch, *, source):
      t0 = time.perf_counter()
      out, info = super()._apply_generation(generator_state, batch, source=source)
      if out is not None:
        gens.append({"source": source, "seconds": time.perf_counter() - t0,
                     "completion_length": info.get(f"gkd_completion_length_{source}")})
      return out, info

  out_dir = tempfile.mkdtemp(prefix="easydel_gkd_")
  config = ed.GKDConfig(
      save_directory=out_dir, total_batch_size=args.batch, max_training_steps=1 + args.timed_steps,
      learning_rate=1e-4, optimizer="adamw", scheduler="none", warmup_steps=0, weight_decay=0.0,
      clip_grad=1.0, lmbda=1.0, beta=0.5, temperature=1.0, max_new_tokens=args.max_new_tokens,
      max_length=total, do_eval=False, save_steps=None, do_last_save=False,
      use_wandb=False, report_metrics=False, progress_bar_type="json", log_steps=1000,
      shuffle_train_dataset=False)
  trainer = Timed(arguments=config, processing_class=tokenizer, model=student, teacher_model=teacher,
                  train_dataset=dataset)
  if trainer.gkd_generate_function is None:
    raise RuntimeError("EasyDeL could not build its generation function: on-policy sampling is off")
  t0 = time.perf_counter()
  trainer.train()
  total = time.perf_counter() - t0
  timed = steps[1:]
  if len(timed) != args.timed_steps or any(s["gen_calls"] != 1 for s in steps):
    raise RuntimeError(f"expected one student generation per step, got {[s['gen_calls'] for s in steps]}")
  secs = sum(s["seconds"] for s in timed)
  print(json.dumps({
      "impl": "easydel", "trainer": "GKDTrainer", "easydel": ed.__version__, "jax": jax.__version__,
      "batch": args.batch, "max_new_tokens": args.max_new_tokens, "student": args.student,
      "seconds_per_step": secs / len(timed), "step_seconds": [round(s["seconds"], 3) for s in steps],
      "generate_seconds_per_step": sum(g["seconds"] for g in gens[1:]) / len(timed),
      "completion_lengths": [g["completion_length"] for g in gens], "train_wall_s": total,
      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "load_avg_1m": os.getloadavg()[0], "teacher": "SmolLM2-135M shape, random weights"}))


if __name__ == "__main__":
  main()
