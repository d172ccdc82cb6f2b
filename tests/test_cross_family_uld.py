"""A teacher and a student of different families, each with its own tokenizer: Universal Logit
Distillation trains across them, and without it the run is refused with the ULD hint."""

import numpy as np
import pytest

from gkd.teachers import build as build_models
from gkd.train import loop, validate
from tests import helpers
from test_hf_families import hf_dir  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.usefixtures("shared_data_dir")


def cross_family_config(tmp_path, cross_tokenizer: str):
  """The testbed smoke run with the Llama 3.x fixture teaching the Qwen3 one (byte-level BPEs
  of different vocabularies), on the student's own tokenizer."""
  c = helpers.smoke_gkd_config()
  c.mesh.num_devices = 1
  c.tokenizer = "teacher"  # under ULD the data uses the student's own tokenizer
  c.teacher.update(source="pretrained", path=hf_dir(tmp_path, "llama3"))
  c.student.update(source="pretrained", path=hf_dir(tmp_path, "qwen3"))
  c.objective.update(cross_tokenizer=cross_tokenizer, alpha=0.5)
  c.mix.update(dataset=0.5, teacher=0.0, student=0.5)
  c.train.update(num_steps=2, checkpoint_every=0, progress_bar=False)
  return c


def test_different_families_and_tokenizers_need_uld(tmp_path):
  with pytest.raises(validate.ConfigError, match="objective.cross_tokenizer='uld'"):
    build_models.build_models(cross_family_config(tmp_path, ""))


@pytest.mark.e2e  # trains
def test_different_families_and_tokenizers_train_through_uld(tmp_path):
  run = loop.Run(cross_family_config(tmp_path, "uld"), str(tmp_path / "run"))
  assert run.student().config.family == "qwen3"
  assert run.teacher.teacher_tokenizer.backend.get_vocab() != run.tokenizer.backend.get_vocab()
  for source in ("dataset", "student"):  # reference answers, then on-policy samples
    batch = run.make_batch(0, source)
    run.state, metrics = run.train_step(run.state, batch, run.teacher_params)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["aligned_tokens"]) > 0
