"""Does a model read a reference solution placed in its prompt, as on-policy self-distillation
(`teacher.source="self"`) needs its student to? On validation examples, the NLL per token of the
reference response given the prompt alone and given the config's privileged prompt
(`teacher.self_template`, `self_distill.teacher_prompt_len` tokens), for the config's student and
teacher exports. A model that reads the reference scores it far better with it than without.

  python experiments/opsd_reads_reference.py --config=configs/arm2_smollm2.py:warmup=1200,stage=gkd \
      [--num_examples=200] > experiments/results/arm2_smollm2/opsd_reads_reference.txt

Run where the config's export paths resolve (the directory holding runs/).
"""

import argparse

import numpy as np

from gkd import models, scoring
from gkd.data import pipeline
from gkd.eval import compare
from gkd.teachers import self_distill


def reference_nll(model, prompts: dict, responses: dict, batch_size: int) -> float:
  """The model's mean −log p per reference token, given `prompts` (tokens and mask, [N, P])."""
  total, count = 0.0, 0.0
  for i in range(0, len(responses["response_mask"]), batch_size):
    batch = {k: v[i:i + batch_size] for k, v in {**prompts, **responses}.items()}
    mask = batch["response_mask"]
    total -= float((np.asarray(scoring.token_scores(model, batch)) * mask).sum())
    count += float(mask.sum())
  return total / count


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", required=True, help="configs/NAME.py[:ARG], the gkd stage")
  parser.add_argument("--num_examples", type=int, default=200)
  parser.add_argument("--batch_size", type=int, default=25)
  args = parser.parse_args()
  config, _ = compare.load_config(args.config)
  d = config.data
  loaded = {role: models.load_pretrained(config[role].path) for role in ("student", "teacher")}
  tokenizer = loaded["student"][1]
  examples = pipeline.eval_examples_for_config(config, "validation", args.num_examples)
  rows = [pipeline.encode_example(tokenizer, e["prompt"], e["response"],
                                  max_prompt_len=d.max_prompt_len,
                                  max_response_len=d.max_response_len,
                                  chat_template=d.chat_template) for e in examples]
  responses = {k: np.stack([r[k] for r in rows]) for k in ("response_tokens", "response_mask")}
  length = self_distill.teacher_prompt_len(config)
  print(f"{args.config}: {len(examples)} validation examples, {int(responses['response_mask'].sum())}"
        f" reference tokens; student {config.student.path}, teacher {config.teacher.path}")
  for template in ("{prompt}", config.teacher.self_template):
    privileged = self_distill.PrivilegedPrompts(template, examples, tokenizer, length=length,
                                                chat_template=d.chat_template)
    p = privileged.batch(range(len(examples)))
    prompts = {"prompt_tokens": p["teacher_prompt_tokens"], "prompt_mask": p["teacher_prompt_mask"]}
    nll = {role: reference_nll(m, prompts, responses, args.batch_size)
           for role, (m, _) in loaded.items()}
    print(f"{template!r} ({length} tokens): NLL per reference token, student "
          f"{nll['student']:.4f}, teacher {nll['teacher']:.4f}", flush=True)


if __name__ == "__main__":
  main()
