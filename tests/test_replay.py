"""Adaptive off-policy with a replay buffer (gkd.sources.replay): the buffer and the schedule by hand,
config errors, and a run that replays, adapts and resumes exactly."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from gkd.sources import replay
from gkd.sources.teacher import TeacherCache
from gkd.train import loop, validate
from tests import helpers
from tests.test_resume import final_state

pytestmark = pytest.mark.usefixtures("shared_data_dir")


def _rows(start, n, width=3):
  ids = np.arange(start, start + n)
  return {"prompt_tokens": np.repeat(ids[:, None], 2, 1), "prompt_mask": np.ones((n, 2), bool),
          "response_tokens": np.repeat(ids[:, None], width, 1), "response_mask": np.ones((n, width), bool)}


def test_buffer_is_first_in_first_out_and_round_trips():
  buf = replay.ReplayBuffer(capacity=5)
  assert len(buf) == 0 and not buf.full
  buf.add(_rows(0, 3))
  buf.add(_rows(3, 4))  # 7 rows: the oldest two (0, 1) drop out
  assert buf.full and list(buf.rows["response_tokens"][:, 0]) == [2, 3, 4, 5, 6]
  key = jax.random.key(0)
  drawn = buf.sample(key, 4)
  assert len(set(drawn["prompt_tokens"][:, 0])) == 4  # without replacement
  assert set(drawn["prompt_tokens"][:, 0]) <= {2, 3, 4, 5, 6}
  np.testing.assert_array_equal(drawn["prompt_tokens"][:, 0], drawn["response_tokens"][:, 0])
  again = replay.ReplayBuffer(capacity=5)
  again.load_state_dict({**buf.state_dict(), "ids": np.zeros(1)})  # others' arrays are ignored
  for k in replay.FIELDS:
    np.testing.assert_array_equal(again.sample(key, 4)[k], drawn[k])
  cache = TeacherCache()  # the teacher cache, restored from the same arrays, ignores the buffer's
  cache.load_state_dict(buf.state_dict())
  assert len(cache) == 0
  with pytest.raises(ValueError, match="one response width"):
    buf.add(_rows(9, 1, width=4))
  with pytest.raises(ValueError, match="empty"):
    replay.ReplayBuffer(2).sample(key, 1)


def test_schedule_adapts_p_by_hand():
  s = replay.AdaptiveSchedule(p=0.2, eps=0.1, increment=0.3)
  for loss, p, reference in [(2.0, 0.2, 2.0),   # the first measurement is the reference
                             (2.05, 0.2, 2.0),  # within eps: no change
                             (2.1, 0.5, 2.1),   # eps above: p rises, the reference moves
                             (1.5, 0.5, 2.1),   # better: no change
                             (2.3, 0.8, 2.3), (2.5, 1.0, 2.5), (2.7, 1.0, 2.7)]:  # capped at 1
    s.update(loss)
    assert (round(s.p, 6), s.reference) == (p, reference)
  s = replay.AdaptiveSchedule(p=0.5, eps=0.0, increment=0.1)
  # Fresh samples with probability p·(1 − t/T), or while the buffer fills; replay up to p.
  assert s.source(0.3, 0, 100, buffer_full=True) == "student"
  assert s.source(0.3, 50, 100, buffer_full=True) == "replay"  # fresh share 0.25 at t = T/2
  assert s.source(0.3, 50, 100, buffer_full=False) == "student"
  assert s.source(0.6, 50, 100, buffer_full=False) == "dataset"
  restored = replay.AdaptiveSchedule(p=0.0, eps=0.0, increment=0.1)
  restored.load(json.loads(json.dumps(s.state())))
  assert restored == s


def _config(**overrides):
  c = helpers.smoke_gkd_config()
  c.mix.update(student=0.6, dataset=0.4)
  c.mix.replay.update(capacity=16, every=2, val_examples=8)
  c.train.update(num_steps=8, checkpoint_every=2, keep_checkpoints=10, progress_bar=False)
  return helpers.apply_overrides(c, overrides)


def test_bad_replay_configs_fail_clearly():
  for overrides, match in [({"mix.replay.capacity": 4}, "at least one batch"),
                           ({"mix.teacher": 0.4, "mix.dataset": 0.0}, "mix.teacher=0"),
                           ({"objective.rl_weight": 0.1}, "rl_weight"),
                           ({"mix.replay.increment": 0.0}, "increment"),
                           ({"mix.replay.every": 0}, "every")]:
    with pytest.raises(validate.ConfigError, match=match):
      validate.validate(_config(**overrides))


@pytest.mark.e2e
def test_a_replaying_run_resumes_exactly(tmp_path):
  loop.train(_config(), str(tmp_path / "straight"))
  rows = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl")]
  sources = {r["source"] for r in rows if "source" in r}
  assert {"student", "replay"} <= sources  # it sampled, then reused samples
  assert [r["replay_size"] for r in rows if "replay_size" in r][-1] == 16
  assert sum("replay_validation_nll" in r for r in rows) == 4  # every 2 of 8 steps
  shutil.copytree(tmp_path / "straight", tmp_path / "cut")
  for name in os.listdir(tmp_path / "cut" / "checkpoints"):
    if int(name) > 4:  # killed after step 4's checkpoint: the buffer and p must come back
      shutil.rmtree(tmp_path / "cut" / "checkpoints" / name)
  for name in ("final_metrics.json", "eval_examples.jsonl"):
    os.remove(tmp_path / "cut" / name)
  shutil.rmtree(tmp_path / "cut" / "export")
  loop.train(_config(), str(tmp_path / "cut"))
  for a, b in zip(final_state(tmp_path / "cut"), final_state(tmp_path / "straight"), strict=True):
    np.testing.assert_array_equal(a, b)
  assert json.loads((tmp_path / "cut" / "final_metrics.json").read_text()) == \
      json.loads((tmp_path / "straight" / "final_metrics.json").read_text())


@pytest.mark.e2e
def test_the_checkpoint_holds_p_its_reference_and_the_buffer(tmp_path):
  run = loop.Run(_config(), str(tmp_path))
  saved = run.sources["replay"]
  saved.schedule.p, saved.schedule.reference = 0.9, 3.25
  saved.buffer.add(_rows(0, 5, width=run.config.data.max_response_len))
  run.save(1, force=True)
  run.checkpointer.wait()
  again = loop.Run(_config(), str(tmp_path))
  assert again.restore() == 1
  restored = again.sources["replay"]
  assert (restored.schedule.p, restored.schedule.reference, len(restored.buffer)) == (0.9, 3.25, 5)
  np.testing.assert_array_equal(restored.buffer.rows["prompt_tokens"],
                                saved.buffer.rows["prompt_tokens"])
  assert "teacher" not in again.sources  # mix.teacher=0: no teacher cache is built or saved
  run.checkpointer.close()
  again.checkpointer.close()
