"""Batch sources at scale: per-example mixing, several samples per prompt, one sampler per run."""


import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from gkd import sources
from gkd.sources import mixing
from gkd.train import loop, validate
from tests.helpers import apply_overrides, count_traces, smoke_gkd_config

MIX = ConfigDict({"dataset": 0.5, "teacher": 0.2, "student": 0.3, "per_example": True})


pytestmark = pytest.mark.usefixtures("shared_data_dir")


def smoke_config(**overrides):
  c = smoke_gkd_config()
  c.mix.update(dataset=0.4, teacher=0.3, student=0.3)
  c.train.update(progress_bar=False, checkpoint_every=0)
  c.mesh.num_devices = 2
  return apply_overrides(c, overrides)


def test_row_sources_are_deterministic_per_row_and_follow_the_fractions():
  rows = sources.row_sources(0, 5, MIX, 4000)
  np.testing.assert_array_equal(rows, sources.row_sources(0, 5, MIX, 4000))  # resumable
  np.testing.assert_array_equal(rows[:8], sources.row_sources(0, 5, MIX, 8))  # batch-size free
  assert not np.array_equal(rows, sources.row_sources(0, 6, MIX, 4000))  # the step matters
  freq = np.bincount(rows, minlength=3) / len(rows)
  np.testing.assert_allclose(freq, [0.5, 0.2, 0.3], atol=4 * np.sqrt(0.25 / len(rows)))
  only = ConfigDict({"dataset": 0.0, "teacher": 1.0, "student": 0.0, "per_example": True})
  assert set(sources.row_sources(1, 0, only, 500)) == {1}  # a zero fraction is never drawn
  assert sources.source_for_step(0, 3, MIX) == sources.MIXED
  assert sources.source_id(sources.MIXED) == len(sources.PER_ROW)


def test_assemble_takes_each_row_from_its_source():
  rng = np.random.default_rng(0)
  rows = rng.integers(0, 3, 16)
  responses = [(rng.integers(0, 9, (16, 5)), rng.random((16, 5)) < 0.5) for _ in range(3)]
  tokens, mask = mixing.assemble(rows, tuple(responses), indices=(0, 1, 2))
  for r in range(16):
    np.testing.assert_array_equal(tokens[r], responses[rows[r]][0][r])
    np.testing.assert_array_equal(mask[r], responses[rows[r]][1][r])


def test_num_samples_must_divide_the_batch():
  with pytest.raises(validate.ConfigError, match="sampling.num_samples=3"):
    validate.validate(smoke_config(**{"sampling.num_samples": 3}))


def _host(x):
  return np.asarray(jax.device_get(x))


@pytest.mark.e2e
def test_per_example_batches_with_two_samples_per_prompt(tmp_path):
  c = smoke_config(**{"mix.per_example": True, "sampling.num_samples": 2})
  run = loop.Run(c, str(tmp_path))
  with jax.set_mesh(run.mesh):
    step = next(s for s in range(50) if set(sources.row_sources(c.seed, s, c.mix, 8)) == {0, 1, 2})
    batch = {k: _host(v) for k, v in run.make_batch(step, sources.MIXED).items()}
    rows = sources.row_sources(c.seed, step, c.mix, 8)
    # Each prompt twice in a row: 4 prompts x 2 samples fill the 8 rows.
    np.testing.assert_array_equal(batch["prompt_tokens"][0::2], batch["prompt_tokens"][1::2])
    cache = run.sources["teacher"].cache
    assert len(cache) == 8  # the teacher generated once for all rows (both samples)
    # Rebuild every source for the same prompts, independently of make_batch's assembly.
    key = jax.random.fold_in(run.rng, step)
    prompts = {k: batch[k] for k in ("prompt_tokens", "prompt_mask")}
    student_sampler = run.sources["student"].sampler
    student = student_sampler(run.state.params["student"], *prompts.values(), rng=key,
                              max_new_tokens=batch["response_tokens"].shape[1])
    first = _first_loader_batch(run)  # make_batch consumed the loader's first batch
    ids = np.repeat(first["example_id"], 2) * 2 + np.tile([0, 1], 4)
    teacher_tokens, _ = cache.lookup(ids)
    expected = (np.repeat(first["response_tokens"], 2, axis=0), teacher_tokens,
                _host(student.tokens))
    for r in range(8):
      np.testing.assert_array_equal(batch["response_tokens"][r], expected[rows[r]][r])
    # The student sampler is built once: a second student batch traces nothing new.
    run.make_batch(step + 1, "student")
    assert count_traces(lambda: run.make_batch(step + 2, "student")) == 0
    assert student_sampler.settings["return_logprobs"] is False


def _first_loader_batch(run):
  from gkd.data.pipeline import loader_for_config
  c = run.config
  return next(loader_for_config(c, run.tokenizer, split="train", batch_size=c.train.batch_size // 2,
                                shuffle=True, num_epochs=None, num_examples=c.data.num_train_examples))
