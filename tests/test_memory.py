"""Memory claims checked by XLA's buffer assignment (`compiled.memory_analysis()`), not estimated."""

import os
import sys

import jax
import pytest

from gkd.data import tasks
from gkd.train import memory
from tests.helpers import apply_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import smollm2_gpu, teacher_1b, testbed  # noqa: E402


@pytest.mark.e2e  # compiles whole train steps of a config
def test_state_bytes_match_the_closed_form_and_the_peak_covers_them():
  c = testbed.get_config("stage=gkd,runlocal=true")
  apply_overrides(c, {"mesh.num_devices": 1, "student.dtype": "bfloat16", "teacher.dtype": "bfloat16"})
  out = memory.analyze(c)
  s_cfg = memory.model_config(c, "student", vocab_size=tasks.testbed_tokenizer().vocab_size)
  _, params = memory.abstract_params(s_cfg)
  n = sum(x.size for x in jax.tree.leaves(params))
  # float32 master weights + Adam's two float32 moments, plus the step counters (int32).
  assert 12 * n <= out["state"] <= 12 * n + 64
  t_cfg = memory.model_config(c, "teacher", vocab_size=s_cfg.vocab_size)
  assert out["teacher"] == 2 * sum(x.size for x in jax.tree.leaves(memory.abstract_params(t_cfg)[1]))
  assert out["train_step"] >= out["state"] + out["teacher"]  # the step's arguments are resident
  assert out["peak"] >= max(out["train_step"], out["state"] + out["teacher"] + out["student_sampler"])


@pytest.mark.e2e  # compiles five configs' train steps
def test_teachers_without_a_model_hold_no_teacher_weights():
  """A scoring server's log-probs come in the batch and the current-weights self teacher reads
  the student's: neither holds teacher weights; an EMA self teacher adds one copy of the
  student's weights to the train state, a frozen initial copy one to the teacher's."""
  def analyzed(**overrides):
    c = testbed.get_config("stage=gkd,runlocal=true")
    return memory.analyze(apply_overrides(c, {"mesh.num_devices": 1, **overrides}))
  live = analyzed(**{"objective.estimator": "sampled_token", "objective.divergence": "reverse_kl"})
  scorer = analyzed(**{"teacher.source": "scorer", "teacher.url": "http://x",
                       "objective.estimator": "sampled_token", "objective.divergence": "reverse_kl"})
  assert live["teacher"] > 0 and scorer["teacher"] == 0
  assert scorer["train_step"] < live["train_step"] - live["teacher"] // 2
  current = analyzed(**{"teacher.source": "self"})
  initial = analyzed(**{"teacher.source": "self", "teacher.self_weights": "initial"})
  ema = analyzed(**{"teacher.source": "self", "teacher.self_weights": "ema"})
  n_bytes = current["state"] // 3  # float32 weights and Adam's two moments
  assert current["teacher"] == 0 and initial["teacher"] == ema["state"] - current["state"]
  assert abs(initial["teacher"] - n_bytes) <= 64


@pytest.mark.slow  # compiles 45- and 54-layer programs: minutes on a small CPU
@pytest.mark.parametrize("module", [smollm2_gpu, teacher_1b], ids=lambda m: m.__name__)
def test_accelerator_configs_fit_the_memory_they_claim(module):
  c = module.get_config()
  c.mesh.num_devices = 1
  out = memory.analyze(c)
  assert out["peak"] <= module.MEMORY_GIB * memory.GiB, {k: v / memory.GiB for k, v in out.items()}


def test_accelerator_configs_describe_the_models_they_claim():
  c = smollm2_gpu.get_config()
  teacher = memory.model_config(c, "teacher")
  student = memory.model_config(c, "student", teacher=teacher)
  assert (teacher.n_layers, student.n_layers) == (30, 15)
  assert student.param_dtype == "float32" and student.dtype == teacher.param_dtype == "bfloat16"
  c = teacher_1b.get_config()
  teacher = memory.model_config(c, "teacher")
  _, params = memory.abstract_params(teacher)
  assert 1.5e9 < sum(x.size for x in jax.tree.leaves(params)) < 2e9  # SmolLM2-1.7B shape
  assert memory.model_config(c, "student").vocab_size == teacher.vocab_size
