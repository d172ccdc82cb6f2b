"""Runs gkd's commands on many command lines at the cost of one interpreter start.

    python tests/cli_runner.py < cases.json > results.json

Each case is {"module": "gkd.main", "args": [...], "cwd": DIR}. The runner imports the
libraries the commands use (nothing that defines flags, and without starting a JAX backend),
then forks one child per case; the child runs the module as `python -m MODULE ARGS` would
(`runpy` as __main__, with sys.argv set), its stdout and stderr going to files. A result is
{"rc": exit status, "stdout": ..., "stderr": ...}. Used by tests/test_bad_inputs.py: about
fifty failing command lines would otherwise pay some fifty interpreter and JAX imports.
"""

import json
import os
import runpy
import sys
import tempfile
import traceback


def _child(case: dict, out: int, err: int) -> None:
  os.dup2(out, 1)
  os.dup2(err, 2)
  os.chdir(case.get("cwd") or os.getcwd())
  sys.argv = [case["module"], *case["args"]]
  code = 1
  try:
    runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # noqa: BLE001 — what Python prints for an uncaught exception
    traceback.print_exc()
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(case: dict) -> dict:
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    pid = os.fork()
    if pid == 0:
      _child(case, out.fileno(), err.fileno())
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return {"rc": os.waitstatus_to_exitcode(status), "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace")}


def main():
  cases = json.load(sys.stdin)
  # What the commands import, loaded once; none of these defines a flag or starts a backend.
  import gkd.eval.summary  # noqa: F401
  import gkd.teachers.blackbox  # noqa: F401
  import gkd.teachers.store_writer  # noqa: F401
  import gkd.train.loop  # noqa: F401
  results = [run(case) for case in cases]
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main()
