"""Every failure a user can cause is one `error:` line through the real command line.

A table of bad inputs (flags, config files and values, workdirs, model files, data files,
stores, black-box files, each command) runs through the commands' own entry points: each case
must exit with the expected status, print exactly one stderr line starting "error:" that names
what is wrong, and no traceback. The cases run in one `tests/cli_runner.py` process that forks
a child per command line (one interpreter start for the table); a few also run as plain
`python -m` processes, and the workdirs and stores they need are made here once.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gkd import rundir
from tests import helpers

ROOT = helpers.ROOT
TESTBED = "configs/testbed.py:stage=gkd,runlocal=true"
FILES = "configs/files.py:runlocal=true"
# The store runs: three steps of sequence-level KD on 16 training prompts (as tests/helpers'
# offline_kd_config), from an import without log-probs (the hard CE alone).
STORE_RUN = {"mix.dataset": 0.0, "mix.teacher": 1.0, "mix.student": 0.0,
             "data.num_train_examples": 16, "objective.divergence": "forward_kl",
             "objective.alpha": 0.0, "train.num_steps": 3, "train.checkpoint_every": 0,
             "eval.num_examples": 8, "eval.every": 0}

pytestmark = pytest.mark.e2e  # drives the command line


def _flags(overrides: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def _env(tmp):
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, GKD_RAW_DIR=str(tmp / "raw"),
              XLA_FLAGS="--xla_force_host_platform_device_count=2")


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """The bad inputs on disk: data files, model files, workdirs and stores."""
  d = tmp_path_factory.mktemp("bad")
  os.environ.setdefault("GKD_DATA_DIR", str(tmp_path_factory.getbasetemp() / "tfds"))
  (d / "raw").mkdir()
  rows = [json.loads(line) for line in open(os.path.join(ROOT, "configs/data/example.jsonl"))]
  (d / "empty.jsonl").write_text("")
  (d / "latin1.jsonl").write_bytes(json.dumps(rows[0]).encode() + b'\n{"question": "caf\xe9"}\n')
  (d / "notjson.jsonl").write_text(json.dumps(rows[0]) + "\n{oops\n")
  _jsonl(d / "nofield.jsonl", [{"prompt": r["question"], "solution": r["solution"]} for r in rows])
  _jsonl(d / "wrongtype.jsonl", [dict(rows[0], question=5), *rows[1:]])
  (d / "nosplits").mkdir()
  (d / "nosplits" / "notes.txt").write_text("hello")
  os.symlink(d / "loop.jsonl", d / "loop.jsonl")
  (d / "fake.parquet").write_text("question,solution\n")
  long = dict(rows[0], question="How many? " * 40)
  _jsonl(d / "long_train.jsonl", rows[:6] + [long])
  _jsonl(d / "train.jsonl", rows)
  _jsonl(d / "long_validation.jsonl", [dict(rows[0], question="Two plus two?"), long])
  (d / "ragged.csv").write_text("question,solution,answer\nTwo plus two?,2 + 2 = 4. Answer: 4,4\n"
                                "One, plus one?,1 + 1 = 2. Answer: 2,2\n")
  for name, meta, file in (
      ("hf_up", {"splits": ["../up"]}, "dataset_dict.json"),
      ("hf_abs", {"_data_files": [{"filename": "/etc/hostname"}]}, "state.json")):
    (d / name).mkdir()
    (d / name / file).write_text(json.dumps(meta))
  # Model files: a tiny Hugging Face export, truncated; one whose index leaves its directory.
  from flax import nnx

  from gkd.data.tasks import testbed_tokenizer
  from gkd.models import llama, save_pretrained
  tiny = llama.Llama(llama.LlamaConfig(vocab_size=101, dim=32, n_layers=1, n_heads=2,
                                       n_kv_heads=1, ffn_dim=64, max_seq_len=128), rngs=nnx.Rngs(0))
  save_pretrained(tiny, testbed_tokenizer(), str(d / "hf_cut"))
  shutil.copytree(d / "hf_cut", d / "hf_index")
  weights = d / "hf_cut" / "model.safetensors"
  os.truncate(weights, os.path.getsize(weights) // 2)
  os.remove(d / "hf_index" / "model.safetensors")
  (d / "hf_index" / "model.safetensors.index.json").write_text(
      json.dumps({"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}}))
  from gkd.models import gguf
  with open(gguf.smollm2_gguf_path(), "rb") as f:
    (d / "cut.gguf").write_bytes(f.read(200_000))
  # Workdirs: a file; a run of another config, finished and not (the files a run writes first
  # and last); one whose lock another process holds (the test).
  (d / "a_file").write_text("")
  from configs import testbed
  from gkd.train import writer
  for name, finished in (("finished", True), ("begun", False)):
    writer.write_config(str(d / name), testbed.get_config("stage=gkd,runlocal=true"))
    if finished:
      (d / name / rundir.FINAL_METRICS).write_text(json.dumps({"step": 4, "nll": 1.0}))
  # A store (a black-box import of the reference responses) and damaged copies of it.
  from gkd.data import pipeline
  from gkd.teachers import blackbox
  config = helpers.apply_overrides(testbed.get_config("stage=gkd,runlocal=true"), STORE_RUN)
  examples = pipeline.eval_examples_for_config(config, "train", 16)
  _jsonl(d / "api.jsonl", [{"prompt": e["prompt"], "response": e["response"]} for e in examples])
  blackbox.import_jsonl(config, str(d / "api.jsonl"), str(d / "store"))
  for name in ("store_nokeys", "store_cut"):
    shutil.copytree(d / "store", d / name)
  os.remove(d / "store_nokeys" / "shard-00000.keys.json")
  shard = d / "store_cut" / "shard-00000.array_record"
  os.truncate(shard, os.path.getsize(shard) // 2)
  (d / "store_empty").mkdir()
  # Black-box files: log-probs that are NaN or positive; problems out of order.
  first = examples[0]
  scored = [{"token": c, "logprob": -0.5} for c in first["response"]]
  nan = [dict(e) for e in scored]
  nan[2]["logprob"] = float("nan")
  positive = [dict(e) for e in scored]
  positive[1]["logprob"] = 0.5
  _jsonl(d / "nan.jsonl", [dict(first, logprobs=nan)])
  _jsonl(d / "positive.jsonl", [dict(first, logprobs=positive)])
  one, two = ({"prompt": e["prompt"], "response": e["response"]} for e in examples[1:3])
  (d / "unordered.jsonl").write_text(  # line 1's prompt has one response, the others two
      "\n".join(json.dumps(r) for r in (one, two, two, first, first)) + "\n{oops\n"
      + json.dumps({"prompt": "no such prompt", "response": "4"}) + "\n")
  (d / "no_sweep.py").write_text("from configs.testbed import get_config  # noqa: F401\n")
  return d


def _cases(d):
  """(name, module, args, exit status, what the error line must say)."""
  store_run = ["--config=" + TESTBED, *_flags(STORE_RUN)]
  files = lambda path, *more: ["--config=" + FILES, f"--workdir={d}/w_files",  # noqa: E731
                               f"--config.data.task_kwargs.path={path}", *more]
  main, bb, ts, sweep, memory = "gkd.main", "gkd.blackbox", "gkd.teacher_store", "gkd.sweep", \
      "gkd.train.memory"
  w = f"--workdir={d}/w"
  return [
      # flags, config files, config fields
      ("config file missing", main, ["--config=configs/nope.py", w], 2, "configs/nope.py"),
      ("config key typo", main, ["--config=" + TESTBED, w, "--config.objective.betta=1"], 2,
       "--config.objective.betta: the config has no field 'betta'"),
      ("nested key typo", main, ["--config=" + TESTBED, w, "--config.mix.replay.capacty=9"], 2,
       'Did you mean "capacity"'),
      ("config arg typo", main, [f"--config={TESTBED},foo=1", w], 2, "'foo=1'"),
      ("value of a wrong type", main, ["--config=" + TESTBED, w, "--config.train.num_steps=x"],
       2, "--config.train.num_steps=x"),
      ("unknown flag", main, ["--config=" + TESTBED, w, "--bogus=1"], 2, "'bogus'"),
      ("no workdir", main, ["--config=" + TESTBED], 1, "--workdir"),
      ("stray argument", main, ["--config=" + TESTBED, w, "extra"], 1, "'extra'"),
      ("unknown task", main, ["--config=" + TESTBED, w, "--config.data.task=arithmatic"], 1,
       "Unknown task 'arithmatic' (data.task)"),
      ("eval batch of 0", main, ["--config=" + TESTBED, w, "--config.eval.batch_size=0"], 1,
       "eval.batch_size=0"),
      ("eval batch vs devices", main, ["--config=" + TESTBED, w, "--config.eval.batch_size=3"],
       1, "eval.batch_size=3 must be a positive multiple of 2"),
      ("truncation policy", main, ["--config=" + TESTBED, w, "--config.data.truncation=cut"], 1,
       "data.truncation='cut'"),
      ("top-k above the vocabulary", main,
       ["--config=" + TESTBED, w, "--config.objective.teacher_topk=1000"], 1,
       "objective.teacher_topk=1000 exceeds the vocabulary of 101"),
      ("prompt length cuts every prompt", main,
       ["--config=" + TESTBED, w, "--config.data.max_prompt_len=2"], 1,
       "data.max_prompt_len=2 cuts every prompt"),
      ("divergence parameter", main,
       ["--config=" + TESTBED, w, "--config.objective.divergence_kw={'beta': 2.0}"], 1, "beta"),
      # workdirs
      ("workdir is a file", main, ["--config=" + TESTBED, f"--workdir={d}/a_file"], 1,
       "cannot write there"),
      ("workdir under /proc", main, ["--config=" + TESTBED, "--workdir=/proc/gkd_run"], 1,
       "--workdir=/proc/gkd_run: cannot write there"),
      ("workdir in use", main, ["--config=" + TESTBED, f"--workdir={d}/locked"], 1,
       "is in use by another process"),
      ("finished run of another config", main,
       ["--config=" + TESTBED, f"--workdir={d}/finished", "--config.student.llama.dim=48"], 1,
       "student.llama.dim: 32 -> 48"),
      ("begun run of another config", main,
       ["--config=" + TESTBED, f"--workdir={d}/begun", "--config.optim.learning_rate=0.1"], 1,
       "optim.learning_rate: 0.0005 -> 0.1"),
      ("verify a missing workdir", main, [f"--verify_workdir={d}/nope"], 1, "no such directory"),
      # model files
      ("pretrained dir missing", main, ["--config=" + TESTBED, w,
                                        "--config.student.source=pretrained",
                                        f"--config.student.path={d}/nope"], 1, "student.path="),
      ("truncated safetensors", main, ["--config=" + TESTBED, w,
                                       "--config.student.source=pretrained",
                                       f"--config.student.path={d}/hf_cut"], 1,
       "model.safetensors is not a readable safetensors file"),
      ("index names a shard elsewhere", main, ["--config=" + TESTBED, w,
                                               "--config.student.source=pretrained",
                                               f"--config.student.path={d}/hf_index"], 1,
       "'../elsewhere.safetensors', outside"),
      ("gguf missing", main, ["--config=" + TESTBED, w, "--config.teacher.source=gguf",
                              f"--config.teacher.path={d}/nope.gguf"], 1, "teacher.path="),
      ("truncated gguf", main, ["--config=" + TESTBED, w, "--config.teacher.source=gguf",
                                f"--config.teacher.path={d}/cut.gguf"], 1,
       "not a readable GGUF file"),
      # data files (the files task)
      ("data file missing", main, files(f"{d}/nope.jsonl"), 1, "nope.jsonl: no such file"),
      ("empty data file", main, files(f"{d}/empty.jsonl"), 1, "no rows to train on"),
      ("non-UTF-8 line", main, files(f"{d}/latin1.jsonl"), 1, "latin1.jsonl:2: not valid UTF-8"),
      ("non-JSON line", main, files(f"{d}/notjson.jsonl"), 1, "notjson.jsonl:2: not valid JSON"),
      ("missing field", main, files(f"{d}/nofield.jsonl"), 1, "no field 'question'"),
      ("field of a wrong type", main, files(f"{d}/wrongtype.jsonl"), 1,
       "field 'question' is not a string"),
      ("directory without splits", main, files(f"{d}/nosplits"), 1,
       "neither a saved Hugging Face dataset"),
      ("symlink loop", main, files(f"{d}/loop.jsonl"), 1, "loop.jsonl: a symbolic link"),
      ("text named .parquet", main, files(f"{d}/fake.parquet"), 1, "fake.parquet: not readable"),
      ("long prompt in train", main, files(f"{d}/long_train.jsonl"), 1,
       "long_train.jsonl:7): field 'prompt' has"),
      ("long prompt in validation", main,
       files("", f"--config.data.task_kwargs.train_path={d}/train.jsonl",
             f"--config.data.task_kwargs.validation_path={d}/long_validation.jsonl"), 1,
       "long_validation.jsonl:2): field 'prompt' has"),
      ("ragged CSV row", main, files(f"{d}/ragged.csv"), 1,
       "ragged.csv:3: 4 cells for the header's 3 columns"),
      ("split list leaves the directory", main, files(f"{d}/hf_up"), 1,
       "the file name '../up' leaves"),
      ("data file list leaves the directory", main, files(f"{d}/hf_abs"), 1,
       "the file name '/etc/hostname' leaves"),
      ("catalogue task without files", main,
       ["--config=" + TESTBED, w, "--config.data.task=gsm8k"], 1, "needs local files"),
      ("negative split size", main, files(f"{d}/train.jsonl",
                                          "--config.data.task_kwargs.test_size=-1"), 1,
       "data.task_kwargs.test_size=-1.0 must be >= 0"),
      # teacher stores
      ("store of another config", main, [*store_run, f"--workdir={d}/w_s1",
                                         f"--config.teacher_store={d}/store",
                                         "--config.data.max_response_len=40"], 1,
       "was written for other data"),
      ("store without its keys file", main, [*store_run, f"--workdir={d}/w_s2",
                                             f"--config.teacher_store={d}/store_nokeys"], 1,
       "shard-00000 has no keys file"),
      ("store with a cut shard", main, [*store_run, f"--workdir={d}/w_s3",
                                        f"--config.teacher_store={d}/store_cut"], 1,
       f"python -m gkd.blackbox --config=... --jsonl=... --out={d}/store_cut --repair"),
      ("store without store.json", main, [*store_run, f"--workdir={d}/w_s4",
                                          f"--config.teacher_store={d}/store_empty"], 1,
       "has no store.json"),
      # black-box imports
      ("NaN log-prob", bb, [*store_run, f"--jsonl={d}/nan.jsonl", f"--out={d}/o1"], 1,
       "line 1: logprobs[2] holds the log-prob nan"),
      ("positive log-prob", bb, [*store_run, f"--jsonl={d}/positive.jsonl", f"--out={d}/o2"], 1,
       "line 1: logprobs[1] holds the log-prob 0.5"),
      ("problems in line order", bb, [*store_run, f"--jsonl={d}/unordered.jsonl",
                                      f"--out={d}/o3"], 1,
       "3 problem(s), nothing imported: line 1: its prompt has 1 responses; most prompts have "
       "2 (every prompt needs the same number); line 6: not JSON (Expecting property name "
       "enclosed in double quotes); line 7: prompt 'no such prompt' is not in arithmetic/train"),
      ("black-box file missing", bb, [*store_run, f"--jsonl={d}/nope.jsonl", f"--out={d}/o4"], 1,
       "nope.jsonl: no such file"),
      # the other commands
      ("store writer without --out", ts, ["--config=" + TESTBED], 2, "--out"),
      ("store writer on a damaged store", ts, ["--config=" + TESTBED, f"--out={d}/store_cut",
                                               "--kind=dataset"], 1, "holds a different store"),
      ("sweep config missing", sweep, ["--config=configs/nope.py", f"--workdir={d}/sw"], 1,
       "no such config file"),
      ("sweep without get_sweep", sweep, [f"--config={d}/no_sweep.py", f"--workdir={d}/sw"], 1,
       "has no get_sweep()"),
      ("memory of a missing model", memory, ["--config=" + TESTBED, "--config.teacher.source=gguf",
                                             f"--config.teacher.path={d}/nope.gguf"], 1,
       "teacher.path="),
  ]


def _run_all(cases, tmp):
  """The results of the cases' command lines, from one runner process."""
  batch = [{"module": module, "args": args, "cwd": ROOT} for _, module, args, *_ in cases]
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cli_runner.py")],
                        input=json.dumps(batch), capture_output=True, text=True, cwd=ROOT,
                        env=_env(tmp), timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout)


def _assert_one_line(name, result, code, needle):
  err = result["stderr"]
  lines = err.splitlines()
  assert result["rc"] == code and len(lines) == 1 and lines[0].startswith("error: ") \
      and "Traceback" not in err and needle in lines[0], \
      f"{name}: exit {result['rc']} (want {code}), stderr:\n{err[-2000:]}"


def test_every_bad_input_is_one_error_line(made):
  cases = _cases(made)
  with rundir.lock(str(made / "locked")):  # held by this process while the cases run
    results = _run_all(cases, made)
  failures = []
  for (name, _, _, code, needle), result in zip(cases, results):
    try:
      _assert_one_line(name, result, code, needle)
    except AssertionError as e:
      failures.append(str(e))
  assert not failures, f"{len(failures)} of {len(cases)} cases:\n\n" + "\n\n".join(failures)
  assert not (made / "o1").exists() and not (made / "o3").exists()  # nothing imported


@pytest.mark.slow  # the table above already goes through each command's main; this adds python -m
def test_the_same_through_python_m_and_with_traceback(made):
  """A few of the table's cases as plain `python -m` processes, one per command; --traceback
  adds the traceback; an unexpected exception (a config missing whole sections) keeps it."""
  chosen = {"config key typo", "black-box file missing", "store writer without --out",
            "sweep config missing", "memory of a missing model", "unknown task"}
  for name, module, args, code, needle in _cases(made):
    if name in chosen:
      proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                            cwd=ROOT, env=_env(made), timeout=600)
      _assert_one_line(name, {"rc": proc.returncode, "stderr": proc.stderr}, code, needle)
  traced = subprocess.run([sys.executable, "-m", "gkd.main", "--config=" + TESTBED,
                           f"--workdir={made}/w", "--config.data.task=arithmatic", "--traceback"],
                          capture_output=True, text=True, cwd=ROOT, env=_env(made), timeout=600)
  assert traced.returncode == 1 and "Traceback" in traced.stderr
  assert "ConfigError: Unknown task 'arithmatic'" in traced.stderr
  (made / "broken.py").write_text("import ml_collections\n\ndef get_config():\n"
                                  "  return ml_collections.ConfigDict({'mode': 'gkd'})\n")
  bug = subprocess.run([sys.executable, "-m", "gkd.main", f"--config={made}/broken.py",
                        f"--workdir={made}/w"], capture_output=True, text=True, cwd=ROOT,
                       env=_env(made), timeout=600)
  assert bug.returncode == 1 and "Traceback" in bug.stderr and "'teacher'" in bug.stderr
  assert not bug.stderr.startswith("error: ")


def test_a_finished_run_of_the_same_config_is_still_only_reported(made):
  """The control of the "another config" cases: the saved config itself is accepted."""
  result = _run_all([("same", "gkd.main", ["--config=" + TESTBED, f"--workdir={made}/finished"])],
                    made)[0]
  assert result["rc"] == 0 and "is finished (step 4); nothing to do" in result["stdout"], result
  assert np.isclose(json.loads((made / "finished" / rundir.FINAL_METRICS).read_text())["nll"], 1.0)
