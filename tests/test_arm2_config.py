"""configs/arm2_smollm2.py: the student's stride (`every`) and warm-up (`warmup`) reach every
stage, and the methods are arm 1's but for plan.md's amendments."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import arm2_smollm2  # noqa: E402
from gkd.errors import ConfigError  # noqa: E402
from gkd.teachers.self_distill import teacher_prompt_len  # noqa: E402
from tests.helpers import apply_overrides  # noqa: E402


def test_every_sets_the_derived_layers_and_the_students_path():
  assert arm2_smollm2.get_config("stage=student").student.derive_every_k == 10
  assert arm2_smollm2.get_config("stage=student,every=5").student.derive_every_k == 5
  assert arm2_smollm2.get_config("every=3").student.path == "runs/arm2_smollm2/student_every3/export"
  assert arm2_smollm2.get_config("every=3,student=x/export").student.path == "x/export"


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
  c = apply_overrides(arm2_smollm2.get_config("stage=gkd"), point)
  assert teacher_prompt_len(c) >= c.data.max_prompt_len + c.data.max_response_len  # all of it


def test_every_planned_comparison_names_two_of_the_arms_methods():
  pairs = [*arm2_smollm2.HYPOTHESES.values(), *arm2_smollm2.SECONDARY, *arm2_smollm2.AMENDED]
  assert len(pairs) == 2 + 11 + 4  # plan.md: H1, H2, 11 secondary, the amendment's 4
  for a, b in pairs:
    assert a != b and {a, b} <= set(arm2_smollm2.METHODS), (a, b)
