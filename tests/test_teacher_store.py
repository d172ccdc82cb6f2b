"""The offline teacher store (gkd.teachers.store_writer): what it holds, that training on it equals
training with the live teacher, that a killed writer resumes, and its errors."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from gkd import models
from gkd.data import pipeline
from gkd.teachers import build as build_models
from gkd.teachers import store
from gkd.teachers import store_writer as teacher_store
from gkd.train import loop, validate
from tests import helpers

pytestmark = pytest.mark.usefixtures("shared_data_dir")
K = 4


def _config(source="dataset", **overrides):
  return helpers.offline_kd_config(source, 32, **overrides)


def _params(workdir):
  model, _ = models.load_pretrained(os.path.join(workdir, "export"))
  return jax.tree.leaves(nnx.state(model).to_pure_dict())


@pytest.mark.e2e
def test_the_store_holds_the_teachers_topk_logprobs_of_each_dataset_response(tmp_path):
  config = _config()
  teacher_store.write(config, str(tmp_path / "s"), kind="dataset", topk=K, shard_examples=16,
                      batch_size=8)
  opened = store.TeacherStore(str(tmp_path / "s"))
  assert len(opened) == 32 and opened.kind == "dataset" and opened.topk == K
  tokenizer, teacher, _ = build_models.build_models(config)
  loader = pipeline.loader_for_config(config, tokenizer, split="train", batch_size=8,
                                      shuffle=False, num_epochs=1, num_examples=32)
  batch = next(loader)
  rows = opened.lookup(batch["example_id"], batch["prompt_tokens"], batch["prompt_mask"],
                      batch["response_tokens"].shape[1])
  np.testing.assert_array_equal(rows["response_mask"], batch["response_mask"])
  np.testing.assert_array_equal(np.where(batch["response_mask"], rows["response_tokens"], 0),
                                np.where(batch["response_mask"], batch["response_tokens"], 0))
  # Reference: the teacher's plain forward over each prompt + response, a float64 softmax.
  for b in range(4):
    prompt = batch["prompt_tokens"][b][batch["prompt_mask"][b]]
    n = int(batch["response_mask"][b].sum())
    tokens = np.concatenate([prompt, batch["response_tokens"][b][:n]])
    logits = np.asarray(teacher(tokens[None]))[0, len(prompt) - 1:len(prompt) - 1 + n]
    logp = np.log(helpers.softmax64(logits))
    top = np.argsort(-logp, -1)[:, :K]
    np.testing.assert_array_equal(rows["teacher_topk_indices"][b, :n], top)
    np.testing.assert_allclose(rows["teacher_topk_logprobs"][b, :n],
                               np.take_along_axis(logp, top, -1), rtol=1e-5, atol=1e-5)
    assert np.all(rows["teacher_topk_logprobs"][b, n:] == -np.inf)


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["dataset", "teacher"])
def test_training_on_a_store_equals_training_with_the_live_teacher(tmp_path, source):
  # Top-k KD on dataset responses, and SeqKD on greedy teacher generations (T = 0, so the
  # store's generations are the live run's): the same parameters, without a teacher model.
  live = _config(source, **{"objective.teacher_topk": K, "sampling.teacher_temperature": 0.0})
  loop.train(live, str(tmp_path / "live"))
  teacher_store.write(live, str(tmp_path / "s"), kind=source, topk=K, shard_examples=16,
                      batch_size=8)
  stored = _config(source, **{"teacher_store": str(tmp_path / "s")})
  final = loop.train(stored, str(tmp_path / "stored"))
  assert "forward_kl" not in final  # no teacher model: no teacher KLs in eval
  for a, b in zip(_params(tmp_path / "live"), _params(tmp_path / "stored")):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.e2e
def test_a_killed_writer_resumes_to_the_same_store(tmp_path):
  config = _config("teacher", **{"sampling.num_samples": 2})
  whole, partial = str(tmp_path / "whole"), str(tmp_path / "partial")
  teacher_store.write(config, whole, kind="teacher", topk=K, shard_examples=8, batch_size=8)
  teacher_store.write(config, partial, kind="teacher", topk=K, shard_examples=8, batch_size=8)
  for name in ("shard-00002.keys.json", "shard-00003.keys.json", "shard-00003.array_record"):
    os.remove(os.path.join(partial, name))  # killed while writing shard 2 (its keys come last)
  teacher_store.write(config, partial, kind="teacher", topk=K, shard_examples=8, batch_size=8)
  for name in sorted(os.listdir(whole)):
    with open(os.path.join(whole, name), "rb") as f, open(os.path.join(partial, name), "rb") as g:
      assert f.read() == g.read(), name
  assert len(store.TeacherStore(whole)) == 64  # 32 prompts × 2 samples
  with pytest.raises(ValueError, match="different store"):
    teacher_store.write(config, whole, kind="teacher", topk=2 * K, shard_examples=8, batch_size=8)


def test_a_store_refuses_runs_it_cannot_serve(tmp_path):
  teacher_store.write(_config(), str(tmp_path / "s"), kind="dataset", topk=K, shard_examples=16,
                      batch_size=8)
  on = {"teacher_store": str(tmp_path / "s")}

  def refused(match, **overrides):
    config = _config(**{**on, **overrides})
    with pytest.raises(ValueError, match=match):
      loop.train(config, str(tmp_path / "run"))

  refused("serves mix.dataset=1", **{"mix.dataset": 0.0, "mix.teacher": 1.0})
  refused("other data", **{"data.max_response_len": 40})
  refused("temperature", **{"objective.temperature": 2.0})
  refused("lacks 32 of the run's 64", **{"data.num_train_examples": 64})
  refused("must be 0 or 4", **{"objective.teacher_topk": 8})
  with pytest.raises(validate.ConfigError, match="on-policy"):
    validate.validate(_config(**{**on, "mix.dataset": 0.5, "mix.student": 0.5}))
  with pytest.raises(validate.ConfigError, match="hidden_loss"):
    validate.validate(_config(**{**on, "objective.hidden_loss": "cosine"}))
  opened = store.TeacherStore(str(tmp_path / "s"))
  prompt, mask = helpers.left_pad([[1, 5, 6]], 8)
  with pytest.raises(ValueError, match="stored prompt of key 0 differs"):
    opened.lookup([0], np.asarray(prompt), np.asarray(mask), 56)
  with pytest.raises(ValueError, match="no store.json"):
    store.TeacherStore(str(tmp_path))
  json.dumps(store.TeacherStore(str(tmp_path / "s")).meta)  # plain JSON


@pytest.mark.e2e
def test_the_command_line_writes_a_store(tmp_path):
  import subprocess
  import sys
  out = tmp_path / "s"
  subprocess.run([sys.executable, "-m", "gkd.teachers.store_writer", f"--config={helpers.ROOT}/configs/"
                  "testbed.py:runlocal=true", f"--out={out}", "--kind=dataset", "--topk=3",
                  "--config.data.num_train_examples=16", "--shard_examples=8", "--batch_size=8"],
                 check=True, cwd=helpers.ROOT, env={**os.environ, "PYTHONPATH": helpers.ROOT},
                 capture_output=True)
  assert len(store.TeacherStore(str(out))) == 16
