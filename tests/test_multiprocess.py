"""Multi-process runs on jax.distributed (localhost, CPU): they equal the single-process run.

Each process is a `python -m gkd.main --coordinator_address --num_processes --process_id`
with its own forced CPU devices; together they form the same 4-device mesh as the
single-process reference, with the same global batch, and every batch source is drawn. The
student's MLP kernels are split over the 4 devices (mesh.fsdp=4), so each process holds, saves
and restores only its own halves, and the export gathers them across processes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

from gkd import rundir
from gkd.rundir import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = 4  # in all, over the processes
STEPS = 6


pytestmark = pytest.mark.e2e  # every test here trains or drives the command line


CONFIG = "configs/testbed.py:stage=gkd,runlocal=true"
OVERRIDES = {"train.progress_bar": False, "mix.dataset": 0.4, "mix.teacher": 0.3,
             "mix.student": 0.3, "train.num_steps": STEPS, "train.checkpoint_every": 1,
             "train.keep_checkpoints": 10,
             # 32×512 MLP kernels: large enough to be split over fsdp (sharding.FSDP_MIN_SIZE)
             "mesh.fsdp": 4, "student.llama.ffn_dim": 512}


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "gkd.main", f"--config={CONFIG}", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in OVERRIDES.items()), *extra]


def _env(num_processes, data_dir):
  flags = f"--xla_force_host_platform_device_count={DEVICES // num_processes}"
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags, GKD_DATA_DIR=str(data_dir),
              PYTHONPATH=ROOT)


def _launch(workdir, n, data_dir, *extra, logs=None, unreadable=None):
  """The processes of one run; each one's stderr goes to LOGS/process_<i>.log (LOGS: the
  workdir, or the single process's stderr is dropped). `unreadable=(i, step)`: process i
  cannot read that checkpoint step's state (tests/faults)."""
  logs = logs or workdir
  if n == 1 and logs == workdir:
    return [subprocess.Popen(_cmd(workdir, *extra), cwd=ROOT, env=_env(1, data_dir),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
  port = portpicker.pick_unused_port()
  os.makedirs(logs, exist_ok=True)

  def distributed(i):
    return [f"--coordinator_address=localhost:{port}", f"--num_processes={n}",
            f"--process_id={i}"] if n > 1 else []

  def env(i):
    if unreadable is None or unreadable[0] != i:
      return _env(n, data_dir)
    return dict(_env(n, data_dir), PYTHONPATH=f"{ROOT}:{os.path.join(ROOT, 'tests', 'faults')}",
                GKD_FAULT_UNREADABLE_STEP=str(unreadable[1]))

  return [subprocess.Popen(_cmd(workdir, *distributed(i), *extra),
                           cwd=ROOT, env=env(i), start_new_session=True,
                           stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(logs, f"process_{i}.log"), "w"))
          for i in range(n)]


def _wait(procs, timeout):
  """The exit codes; processes still running after `timeout` seconds (a hang) are killed."""
  try:
    return [p.wait(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)


def _run(workdir, n, data_dir, timeout=900, **launch):
  codes = _wait(_launch(workdir, n, data_dir, **launch), timeout)
  assert codes == [0] * n, f"exit codes {codes}; see {workdir}/process_*.log"


def _straight(base, n):
  """The uninterrupted run on n processes (run once, shared by the tests that cut it back)."""
  workdir = base / f"p{n}"
  if not (workdir / rundir.FINAL_METRICS).exists():
    _run(workdir, n, base / "tfds")
  return workdir


def _cut(src, dst, step: int):
  """A copy of a finished run as a kill just after checkpoint `step` leaves it."""
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("process_*.log", rundir.LOCK))
  for name in os.listdir(dst / rundir.CHECKPOINTS):
    if name.isdigit() and int(name) > step:
      shutil.rmtree(dst / rundir.CHECKPOINTS / name)
  for name in (rundir.FINAL_METRICS, rundir.EVAL_EXAMPLES):
    os.remove(dst / name)
  shutil.rmtree(dst / rundir.EXPORT)
  rows = read_jsonl(str(dst / rundir.METRICS))
  kept = [json.dumps(r) + "\n" for r in rows if r["step"] <= step]
  (dst / rundir.METRICS).write_text("".join(kept))
  return dst


def _result(workdir):
  from gkd.models import load_pretrained
  rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  model, _ = load_pretrained(os.path.join(workdir, "export"))
  from gkd.models.llama import flat_params
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    final = json.load(f)
  return ([r["loss"] for r in rows if "loss" in r], [r["source"] for r in rows if "source" in r],
          {k: np.asarray(v) for k, v in flat_params(model).items()}, final)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The single-process run (it also prepares the dataset the multi-process runs share)."""
  base = tmp_path_factory.mktemp("mp")
  _run(base / "single", 1, base / "tfds")
  return base, _result(base / "single")


def _assert_same(result, ref):
  losses, sources, params, final = result
  assert sources == ref[1] and set(sources) == {"dataset", "teacher", "student"}
  # Same mesh, same programs; only the cross-process all-reduce may sum in another order.
  np.testing.assert_allclose(losses, ref[0], rtol=1e-5)
  for k in ref[2]:
    np.testing.assert_allclose(params[k], ref[2][k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert final["num_examples"] == ref[3]["num_examples"]
  np.testing.assert_allclose(final["nll"], ref[3]["nll"], rtol=1e-5)


def _kill_mid_run_and_restart(workdir, n, data_dir):
  procs = _launch(workdir, n, data_dir)
  deadline = time.time() + 600
  while time.time() < deadline and not (workdir / "checkpoints" / "3").exists():
    time.sleep(0.05)
  os.killpg(procs[-1].pid, signal.SIGKILL)  # one process dies mid-run (possibly mid-save) ...
  time.sleep(1.0)
  for p in procs[:-1]:  # ... and the others, stuck in collectives or aborted, are stopped
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
  for p in procs:
    p.wait()
  assert not (workdir / "final_metrics.json").exists(), "the run finished before it was killed"
  _run(workdir, n, data_dir)  # restart all of them: they resume from the last checkpoint


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_processes_equal_one_and_survive_sigkill(reference, n):
  base, ref = reference
  _assert_same(_result(_straight(base, n)), ref)
  _kill_mid_run_and_restart(base / f"p{n}_killed", n, base / "tfds")
  _assert_same(_result(base / f"p{n}_killed"), ref)


@pytest.mark.slow  # SIGKILL of one process is in the default tier; SIGTERM of one process too (test_process)
def test_sigterm_to_one_process_stops_all_at_one_saved_step_and_resumes(reference):
  """A scheduler may signal the processes of a job at different moments: they must still stop
  together (a process that stops alone leaves the others hanging in the next collective)."""
  base, ref = reference
  workdir = base / "p2_sigterm"
  procs = _launch(workdir, 2, base / "tfds")
  try:
    deadline = time.time() + 600
    while time.time() < deadline and not (workdir / "checkpoints" / "2").exists():
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # process 1 only
    codes = [p.wait(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
  assert codes == [143, 143], f"exit codes {codes}; see {workdir}/process_*.log"
  assert not (workdir / "final_metrics.json").exists()
  _run(workdir, 2, base / "tfds")
  _assert_same(_result(workdir), ref)


def test_a_checkpoint_resumes_on_another_number_of_processes(reference):
  """The data position is global (hosts slice one stream of global batches), so a run saved
  by 2 processes resumes on 1, and one saved by 1 on 2, to the uninterrupted result."""
  base, ref = reference
  _run(_cut(_straight(base, 2), base / "p2_on_1", 3), 1, base / "tfds")
  _assert_same(_result(base / "p2_on_1"), ref)
  _run(_cut(base / "single", base / "p1_on_2", 3), 2, base / "tfds")
  _assert_same(_result(base / "p1_on_2"), ref)


def test_a_step_unreadable_on_one_process_is_dropped_by_all(reference):
  """Process 1 alone cannot read the newest step (a read error injected there only): every
  process drops that step together and all resume from the one before, to the same result."""
  base, ref = reference
  workdir = _cut(_straight(base, 2), base / "p2_unreadable", 3)
  _run(workdir, 2, base / "tfds", timeout=600, unreadable=(1, 3))
  warning = [line for line in (workdir / "process_0.log").read_text().splitlines()
             if "unreadable" in line]
  assert len(warning) == 1 and "checkpoint step 3" in warning[0], warning
  _assert_same(_result(workdir), ref)


def test_a_data_position_that_one_process_cannot_take_stops_all(reference, tmp_path):
  """Process 1's saved data position names other data (as a host whose prepared data
  differs): both processes stop with the one line instead of one waiting for the other."""
  base, _ = reference
  workdir = _cut(_straight(base, 2), tmp_path / "w", 3)
  meta = workdir / rundir.CHECKPOINTS / "3" / "data" / "metadata"
  data = json.loads(meta.read_text())
  data["loaders"][1]["loader"]["seed"] = 99
  meta.write_text(json.dumps(data))
  _refused(workdir, base / "tfds", logs=tmp_path / "logs",
           expect="checkpoint step 3 holds the data position of other data (process 1")


def _refused(workdir, data_dir, *extra, logs, expect: str):
  """Launches 2 processes that must both stop at once with one `error:` line naming `expect`."""
  codes = _wait(_launch(workdir, 2, data_dir, *extra, logs=logs), 300)
  errs = [(logs / f"process_{i}.log").read_text() for i in range(2)]
  for i, err in enumerate(errs):
    lines = err.strip().splitlines()
    assert codes[i] == 1 and len(lines) == 1 and lines[0].startswith("error: ") \
        and expect in lines[0], f"process {i}: exit {codes[i]}, stderr:\n{err[-3000:]}"


def test_a_refusal_stops_every_process_at_once(tmp_path):
  """A busy workdir, an eval batch the 4 devices cannot split, and a finished workdir of
  another config: each process exits with the one line, none is left in a collective."""
  with rundir.lock(str(tmp_path / "busy")):
    _refused(tmp_path / "busy", tmp_path / "tfds", logs=tmp_path / "busy_logs",
             expect="is in use by another process")
  _refused(tmp_path / "eval", tmp_path / "tfds", "--config.eval.batch_size=6",
           logs=tmp_path / "eval_logs", expect="eval.batch_size=6 must be a positive multiple of 4")
  from configs import testbed
  from gkd.train import writer
  from tests.helpers import apply_overrides
  other = apply_overrides(testbed.get_config(CONFIG.split(":")[1]),
                          {**OVERRIDES, "student.llama.dim": 48})
  writer.write_config(str(tmp_path / "finished"), other)  # what a finished run of it leaves
  (tmp_path / "finished" / rundir.FINAL_METRICS).write_text('{"step": 6}')
  _refused(tmp_path / "finished", tmp_path / "tfds", logs=tmp_path / "finished_logs",
           expect="student.llama.dim: 48 -> 32")


def test_only_the_primary_process_writes_metrics_and_events(tmp_path):
  """Every process logs the same replicated metrics; a second writer on the workdir would
  rewrite metrics.jsonl under the first and race it to create the TensorBoard directory."""
  from gkd.train import writer
  other = writer.MetricWriter(str(tmp_path), primary=False)
  assert other.write(3, {"loss": 1.0}) == {"step": 3, "loss": 1.0}
  other.close()
  assert list(tmp_path.iterdir()) == []
  main = writer.MetricWriter(str(tmp_path))
  main.write(3, {"loss": 1.0})
  main.close()
  assert [r["loss"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [1.0]
  assert (tmp_path / "tb").is_dir()
