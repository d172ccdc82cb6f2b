"""Exact resume after every kind of interruption, with every batch source, in process.

One uninterrupted run is the reference: 7 steps drawing student, dataset, dataset, teacher,
student, teacher, teacher (seed 0, mix 0.4/0.3/0.3), every step checkpointed, and a 16-example
train set so later teacher steps reuse cached generations. Each other workdir is a copy of it
cut back to what a kill at some moment leaves behind, then resumed: it must end with the
reference's parameters, losses and final metrics, with no duplicate rows or leftovers.
"""

import json
import logging
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gkd import rundir, sources
from gkd.train import checkpoint, loop
from tests.helpers import apply_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 7
MIX = dict(dataset=0.4, teacher=0.3, student=0.3)


pytestmark = pytest.mark.e2e  # every test here trains or drives the command line


def config(**overrides):
  sys.path.insert(0, ROOT)
  from configs import testbed
  c = testbed.get_config("stage=gkd,runlocal=true")
  c.mix.update(MIX)
  c.data.num_train_examples = 16  # two steps per epoch: teacher outputs are looked up again
  c.mesh.num_devices = 2
  c.train.update(num_steps=STEPS, checkpoint_every=1, keep_checkpoints=10, progress_bar=False)
  return apply_overrides(c, overrides)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  os.environ["GKD_DATA_DIR"] = str(tmp_path_factory.getbasetemp() / "tfds")
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.getbasetemp() / "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  workdir = tmp_path_factory.mktemp("resume") / "straight"
  loop.train(config(), str(workdir))
  yield workdir
  jax.config.update("jax_compilation_cache_dir", None)


def test_the_reference_run_draws_every_source():
  drawn = [sources.source_for_step(0, s, MIX) for s in range(STEPS)]
  assert drawn == ["student", "dataset", "dataset", "teacher", "student", "teacher", "teacher"]


def cut(straight, dst, step: int):
  """A copy of the finished run as a kill after checkpoint `step` leaves it."""
  shutil.copytree(straight, dst)
  for name in os.listdir(dst / "checkpoints"):
    if int(name) > step:
      shutil.rmtree(dst / "checkpoints" / name)
  for name in (rundir.FINAL_METRICS, rundir.EVAL_EXAMPLES):
    os.remove(dst / name)
  shutil.rmtree(dst / rundir.EXPORT)
  rows = rundir.read_jsonl(str(dst / rundir.METRICS))
  kept = "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step + 1)  # logged, not saved
  (dst / rundir.METRICS).write_text(kept + '{"step": ')  # a line cut short by the kill
  return dst


def final_state(workdir):
  ckpt = checkpoint.Checkpointer(str(workdir), every=1, keep=None)
  restored = ckpt._manager.restore(ckpt.latest_step(),
                                   args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpt.close()
  return jax.tree.leaves(restored["state"])


def assert_same_run(workdir, straight):
  for a, b in zip(final_state(workdir), final_state(straight), strict=True):
    np.testing.assert_array_equal(a, b)
  rows, ref = (rundir.read_jsonl(str(w / rundir.METRICS)) for w in (workdir, straight))
  strip = lambda rs: [{k: v for k, v in r.items() if k not in ("step_s", "train_tokens_per_s")}
                      for r in rs]
  assert strip(rows) == strip(ref)  # no duplicated, lost or differing row (truncated_total too)
  assert json.loads((workdir / rundir.FINAL_METRICS).read_text()) == \
      json.loads((straight / rundir.FINAL_METRICS).read_text())
  assert not [n for n in os.listdir(workdir) if ".tmp." in n]


def test_killed_mid_step_before_a_dataset_step(straight, tmp_path):
  workdir = cut(straight, tmp_path / "w", 1)
  loop.train(config(), str(workdir))
  assert_same_run(workdir, straight)


def test_killed_mid_save_before_a_student_step(straight, tmp_path):
  workdir = cut(straight, tmp_path / "w", 5)
  # A save cut short: orbax's temporary directory of step 5, never renamed.
  os.rename(workdir / "checkpoints" / "5", workdir / "checkpoints" / "5.orbax-checkpoint-tmp-123")
  loop.train(config(), str(workdir))
  assert_same_run(workdir, straight)


def test_corrupt_newest_checkpoint_falls_back_with_one_warning(straight, tmp_path, caplog):
  workdir = cut(straight, tmp_path / "w", 6)
  data = workdir / "checkpoints" / "6" / "state" / "d"
  for f in data.iterdir():
    os.truncate(f, 100)
  assert checkpoint.verify(str(workdir))["intact"] == [1, 2, 3, 4, 5]
  with caplog.at_level(logging.WARNING):
    loop.train(config(), str(workdir))  # from step 5: a teacher step on cached generations
  warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
  assert len(warnings) == 1 and "step 6" in warnings[0] and str(workdir) in warnings[0]
  assert_same_run(workdir, straight)


def test_killed_during_final_eval_or_export(straight, tmp_path):
  workdir = cut(straight, tmp_path / "w", STEPS)
  rows = rundir.read_jsonl(str(straight / rundir.METRICS))  # the final eval row was written
  (workdir / rundir.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
  (workdir / "export.tmp.999").mkdir()  # an export cut short
  (workdir / "final_metrics.json.tmp.999").write_text("{")
  loop.train(config(), str(workdir))
  assert_same_run(workdir, straight)
  assert sum("eval/nll" in r for r in rundir.read_jsonl(str(workdir / rundir.METRICS))) == 1


def test_a_finished_run_is_only_reported(straight, capsys):
  before = {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file() and p.name != rundir.LOCK}
  final = loop.train(config(), str(straight))
  assert "is finished (step 7); nothing to do" in capsys.readouterr().out
  assert final == {k: v for k, v in json.loads((straight / rundir.FINAL_METRICS).read_text()).items()
                   if k != "step"}
  assert {p: p.stat().st_mtime_ns for p in straight.rglob("*") if p.is_file() and p.name != rundir.LOCK} == before


def test_incompatible_checkpoint_is_one_clear_error(straight, tmp_path):
  workdir = cut(straight, tmp_path / "w", 3)
  with pytest.raises(checkpoint.CheckpointError) as e:
    loop.train(config(**{"student.llama.dim": 48}), str(workdir))
  message = str(e.value)
  assert "\n" not in message and str(workdir) in message
  assert "student.llama.dim: 32 -> 48" in message
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3"]  # nothing was touched
  report = checkpoint.verify(str(workdir), config(**{"student.llama.dim": 48}))
  assert report["intact"] == [1, 2, 3] and not report["finished"]
  assert report["config_diff"] == ["student.llama.dim: 32 -> 48"]
