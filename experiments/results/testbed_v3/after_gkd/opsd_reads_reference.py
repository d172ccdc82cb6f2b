"""Does the SFT student B read a reference solution placed in its prompt? On 500 validation
examples, each model's NLL per token of the reference response, given the prompt alone and given
the privileged prompts on-policy self-distillation would use (72-token budget). Run from the repo
root after launch.sh has copied the stages (runs/testbed_v3/{teacher,student_n2000}):
  PYTHONPATH=. python experiments/results/testbed_v3/after_gkd/opsd_reads_reference.py > experiments/results/testbed_v3/after_gkd/opsd_reads_reference.txt
"""

import numpy as np

from configs import testbed
from gkd import models, scoring
from gkd.data import pipeline
from gkd.teachers import self_distill

config = testbed.get_config("stage=gkd")
student, tokenizer = models.load_pretrained("runs/testbed_v3/student_n2000/export")
teacher, _ = models.load_pretrained("runs/testbed_v3/teacher/export")
examples = pipeline.eval_examples_for_config(config, "validation", 500)
rows = [pipeline.encode_example(tokenizer, e["prompt"], e["response"], max_prompt_len=24,
                                max_response_len=56) for e in examples]
responses = {k: np.stack([r[k] for r in rows]) for k in ("response_tokens", "response_mask")}
for template in ("{prompt}", "{reference}\n{prompt}", "{answer}|{prompt}"):
  prompts = self_distill.PrivilegedPrompts(template, examples, tokenizer, length=72,
                                           chat_template=False).batch(range(len(examples)))
  batch = {"prompt_tokens": prompts["teacher_prompt_tokens"],
           "prompt_mask": prompts["teacher_prompt_mask"], **responses}
  mask = batch["response_mask"]
  nll = {name: -(np.asarray(scoring.token_scores(model, batch)) * mask).sum() / mask.sum()
         for name, model in (("student", student), ("teacher", teacher))}
  print(f"{template!r}: NLL per reference token, student B {nll['student']:.4f}, "
        f"teacher B {nll['teacher']:.4f}")
