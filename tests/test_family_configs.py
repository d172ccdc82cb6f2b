"""The real-sized configs of the model families (configs/qwen3.py, configs/llama3_2.py): the
shapes they claim, a valid config, and the memory they claim (XLA's buffer assignment)."""

import os
import sys

import jax
import pytest

from gkd.train import memory, validate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import llama3_2, qwen3  # noqa: E402

# (config module, teacher parameters, student parameters, family) of the released checkpoints
CLAIMS = [(qwen3, 1.72e9, 0.596e9, "qwen3"), (llama3_2, 3.21e9, 1.236e9, "llama")]


def _params(cfg) -> int:
  return sum(x.size for x in jax.tree.leaves(memory.abstract_params(cfg)[1]))


@pytest.mark.parametrize("module, teacher_n, student_n, family", CLAIMS,
                         ids=lambda x: getattr(x, "__name__", None))
def test_configs_describe_the_released_models(module, teacher_n, student_n, family):
  c = module.get_config()
  validate.validate(c)
  teacher, student = memory.model_config(c, "teacher"), memory.model_config(c, "student")
  assert teacher.family == student.family == family
  assert teacher.vocab_size == student.vocab_size
  assert abs(_params(teacher) / teacher_n - 1) < 0.01
  assert abs(_params(student) / student_n - 1) < 0.01
  assert student.param_dtype == "float32"
  assert student.dtype == teacher.param_dtype == "bfloat16"
  paths = module.get_config("teacher=/t,student=/s")
  assert (paths.teacher.source, paths.teacher.path) == ("pretrained", "/t")
  assert paths.student.path == "/s"


@pytest.mark.slow  # compiles 28-layer programs over 128k–152k vocabularies: minutes on a small CPU
@pytest.mark.parametrize("module", [qwen3, llama3_2], ids=lambda m: m.__name__)
def test_configs_fit_the_memory_they_claim(module):
  c = module.get_config()
  c.mesh.num_devices = 1
  out = memory.analyze(c)
  assert out["peak"] <= module.MEMORY_GIB * memory.GiB, {k: v / memory.GiB for k, v in out.items()}
