"""Multi-process runs on jax.distributed (localhost, CPU): they equal the single-process run.

Each process is a `python -m gkd.main --coordinator_address --num_processes --process_id`
with its own forced CPU devices; together they form the same 4-device mesh as the
single-process reference, with the same global batch, and every batch source is drawn.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

from gkd.rundir import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = 4  # in all, over the processes
STEPS = 6


pytestmark = pytest.mark.e2e  # every test here trains or drives the command line


def _cmd(workdir, *extra):
  return [sys.executable, "-m", "gkd.main", "--config=configs/testbed.py:stage=gkd,runlocal=true",
          f"--workdir={workdir}", "--config.train.progress_bar=false", "--config.mix.dataset=0.4",
          "--config.mix.teacher=0.3", "--config.mix.student=0.3",
          f"--config.train.num_steps={STEPS}", "--config.train.checkpoint_every=1", *extra]


def _env(num_processes, data_dir):
  flags = f"--xla_force_host_platform_device_count={DEVICES // num_processes}"
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags, GKD_DATA_DIR=str(data_dir),
              PYTHONPATH=ROOT)


def _launch(workdir, n, data_dir):
  if n == 1:
    return [subprocess.Popen(_cmd(workdir), cwd=ROOT, env=_env(1, data_dir),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
  port = portpicker.pick_unused_port()
  os.makedirs(workdir, exist_ok=True)
  return [subprocess.Popen(_cmd(workdir, f"--coordinator_address=localhost:{port}",
                                f"--num_processes={n}", f"--process_id={i}"),
                           cwd=ROOT, env=_env(n, data_dir), start_new_session=True,
                           stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(workdir, f"process_{i}.log"), "w"))
          for i in range(n)]


def _run(workdir, n, data_dir):
  procs = _launch(workdir, n, data_dir)
  codes = [p.wait(timeout=900) for p in procs]
  assert codes == [0] * n, f"exit codes {codes}; see {workdir}/process_*.log"


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
  _run(base / f"p{n}", n, base / "tfds")
  _assert_same(_result(base / f"p{n}"), ref)
  _kill_mid_run_and_restart(base / f"p{n}_killed", n, base / "tfds")
  _assert_same(_result(base / f"p{n}_killed"), ref)


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
