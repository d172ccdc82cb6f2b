"""The testbed with several teachers, or with a teacher that has another tokenizer.

Several teachers (gkd.teachers.ensemble): `teachers=` lists Hugging Face dirs joined by "+", and
`weights=` their relative weights ("2+1"; default equal); `combine=mixture|sum`:
  python -m gkd.main --config=configs/teachers.py:teachers=A/export+B/export,weights=2+1 \
      --workdir=runs/teachers/two
A teacher with another tokenizer (gkd.teachers.uld, Universal Logit Distillation): `uld_teacher=` a
Hugging Face dir, or "gguf" for the bundled SmolLM2-135M-Instruct (byte-level BPE, 49,152
tokens) teaching the char-level testbed student:
  python -m gkd.main --config=configs/teachers.py:uld_teacher=gguf --workdir=runs/teachers/uld
      ~10 s/step on-policy on the shared 2-core CPU (the 135M teacher's forward dominates), so
      the stage's 500 steps take ~1.5 h; add steps=N to shorten it.
Everything else is configs/testbed.py's gkd stage (on-policy JSD from the SFT'd student; ULD
runs use α = 0.5, the student's CE on its own tokens being half the loss). `runlocal=true`:
two tiny random teachers and a few steps (seconds).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import testbed  # noqa: E402
from gkd.train.defaults import model_config, parse_arg  # noqa: E402


def get_config(arg=None):
  arg = parse_arg(arg, teachers="", weights="", combine="mixture", uld_teacher="", steps=0,
                  runlocal=False, seed=0, student="runs/testbed_v2/student_sft/export")
  c = testbed.get_config(f"stage=gkd,runlocal={arg.runlocal},seed={arg.seed},steps={arg.steps},"
                         f"student={arg.student}")
  paths = [p for p in arg.teachers.split("+") if p]
  weights = [float(w) for w in arg.weights.split("+") if w] or [1.0] * max(len(paths), 2)
  if arg.uld_teacher:
    source = "gguf" if arg.uld_teacher == "gguf" else "pretrained"
    c.teacher.update(source=source, path="" if source == "gguf" else arg.uld_teacher)
    c.objective.update(cross_tokenizer="uld", alpha=0.5)
  elif arg.runlocal:  # two tiny random teachers (seeds seed+1, seed+2)
    c.teachers = [model_config(**c.teacher, weight=w) for w in weights[:2]]
  else:
    if len(weights) != len(paths):
      raise ValueError(f"weights={arg.weights!r} must give one weight per teacher in {paths}.")
    c.teachers = [model_config(source="pretrained", path=p, weight=w)
                  for p, w in zip(paths, weights)]
  c.objective.multi_teacher = arg.combine
  return c
