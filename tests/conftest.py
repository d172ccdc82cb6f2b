"""Shared test settings: 8 forced host devices for sharding tests, the slow-test switch, and
the datasets' directory."""

import os

# Must be set before JAX initializes its backend; tests use 1 device unless they build a mesh.
# The in-process tests check values on tiny models, where compiling is nearly all of the time:
# LLVM's cheap pipeline, XLA's older (simpler) fusion emitters and a single codegen thread
# compile them in a fraction of the time. The end-to-end tests' command-line training runs set
# their own XLA_FLAGS and so compile as a user's run does.
os.environ.setdefault("XLA_FLAGS", " ".join([
    "--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true", "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_parallel_codegen_split_count=1"]))
# The command-line runs the tests start compile afresh and write nothing into the user's cache
# (gkd.train.compile_cache); a test that wants the cache sets its own directory.
os.environ["GKD_COMPILATION_CACHE"] = "off"

import pytest  # noqa: E402


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
  if config.getoption("--runslow"):
    return
  skip = pytest.mark.skip(reason="slow: run with --runslow")
  for item in items:
    if "slow" in item.keywords:
      item.add_marker(skip)


@pytest.fixture
def shared_data_dir(tmp_path_factory, monkeypatch):
  """GKD_DATA_DIR in the session's temp root: a test worker prepares each task's dataset once
  and every test that trains reuses it (preparing is deterministic)."""
  monkeypatch.setenv("GKD_DATA_DIR", str(tmp_path_factory.getbasetemp() / "tfds"))
