"""configs/arm2_smollm2.py's student stride (`every`, plan.md's amendments) reaches every stage,
and experiments/quality_diversity.py passes a config's own argument on."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import arm2_smollm2  # noqa: E402
from gkd.errors import ConfigError  # noqa: E402


def _quality_diversity():
  path = os.path.join(ROOT, "experiments", "quality_diversity.py")
  spec = importlib.util.spec_from_file_location("quality_diversity", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_sets_the_derived_layers_and_the_students_path():
  assert arm2_smollm2.get_config("stage=student").student.derive_every_k == 10
  assert arm2_smollm2.get_config("stage=student,every=5").student.derive_every_k == 5
  assert arm2_smollm2.get_config("every=3").student.path == "runs/arm2_smollm2/student_every3/export"
  assert arm2_smollm2.get_config("every=3,student=x/export").student.path == "x/export"


def test_quality_diversity_keeps_the_configs_argument():
  qd = _quality_diversity()
  config, _ = qd.load_config(os.path.join(ROOT, "configs/arm2_smollm2.py:every=5"), "stage=gkd")
  assert config.student.path == "runs/arm2_smollm2/student_every5/export"
  config, _ = qd.load_config(os.path.join(ROOT, "configs/arm2_smollm2.py"), "stage=gkd,student=y")
  assert config.student.path == "y"


def test_a_bad_stride_fails_with_one_line():
  with pytest.raises(ConfigError, match="every takes int values, not 'five'"):
    arm2_smollm2.get_config("every=five")


def test_warmup_sets_the_students_sft_steps_and_its_name():
  assert arm2_smollm2.get_config("stage=student").train.num_steps == 300
  c = arm2_smollm2.get_config("stage=student,warmup=1200")
  assert c.train.num_steps == 1200 and c.student.derive_every_k == 10
  assert (arm2_smollm2.get_config("warmup=1200").student.path
          == "runs/arm2_smollm2/student_every10_sft1200/export")


def test_self_distillations_teacher_reads_the_whole_reference():
  point = next(p for p in arm2_smollm2.get_sweep() if p.get("teacher.source") == "self")
  c = arm2_smollm2.get_config("stage=gkd")
  for key, value in point.items():
    if key != "seed":
      group, name = key.split(".") if "." in key else ("", key)
      (c[group] if group else c)[name] = value
  length = c.teacher.self_prompt_len or c.data.max_prompt_len + c.data.max_response_len
  assert length >= c.data.max_prompt_len + c.data.max_response_len  # the reference's every token
