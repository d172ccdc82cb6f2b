"""The package's shape: its parts import each other without cycles, and modules stay small."""

import ast
import os
import subprocess
import sys
import warnings

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gkd")


def _modules():
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        yield os.path.join(root, name)


def _part(dotted: str) -> str:
  """gkd.train.loop -> gkd.train (a subpackage is one part); gkd.sampling -> gkd.sampling."""
  return ".".join(dotted.split(".")[:2])


def _imports(path: str):
  """Every gkd module `path` imports, at module level or inside functions."""
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith("gkd"))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gkd"):
      # `from gkd import sampling` imports the module gkd.sampling.
      yield from (f"{node.module}.{a.name}" if node.module == "gkd" else node.module
                  for a in node.names)


def import_graph() -> dict[str, set[str]]:
  graph = {}
  for path in _modules():
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    src = _part(rel.removesuffix(".__init__"))
    graph.setdefault(src, set()).update(_part(m) for m in _imports(path) if _part(m) != src)
  return graph


def find_cycle(graph):
  """One import cycle as a list of parts, or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_package_parts():
  graph = import_graph()
  assert {"gkd.train", "gkd.eval", "gkd.data", "gkd.models"} <= set(graph)
  assert "gkd.eval" in graph["gkd.train"]  # the graph sees real edges
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# The package's layers, lowest first: a part may import its own layer and those below it.
LAYERS = (
    ("gkd.errors", "gkd.rundir", "gkd.sharding", "gkd.scoring", "gkd.divergences"),  # leaves
    ("gkd.models",),
    ("gkd.data",),
    ("gkd.objectives", "gkd.sampling"),
    ("gkd.teachers", "gkd.eval"),
    ("gkd.sources",),
    ("gkd.train",),
    ("gkd.main", "gkd.sweep", "gkd.teacher_store", "gkd.blackbox"),  # commands
)


def upward_imports(graph, layers) -> list[str]:
  """'a -> b' for every import of a part from a higher layer than its own."""
  level = {part: i for i, parts in enumerate(layers) for part in parts}
  return [f"{src} -> {dst}" for src, targets in sorted(graph.items()) for dst in sorted(targets)
          if src in level and level[dst] > level[src]]


def test_upward_imports_finds_one():
  layers = (("a",), ("b",), ("c",))
  assert upward_imports({"c": {"a", "b"}, "b": {"a"}}, layers) == []
  assert upward_imports({"a": {"c"}, "b": {"b"}}, layers) == ["a -> c"]


def test_no_import_runs_back_up_the_layers():
  graph = import_graph()
  unplaced = sorted(set(graph) - {p for parts in LAYERS for p in parts} - {"gkd"})
  assert not unplaced, f"add {unplaced} to LAYERS"
  assert upward_imports(graph, LAYERS) == []


SOFT_LIMIT, HARD_LIMIT = 400, 600  # lines: past the first, look for a seam; past the second, split


@pytest.mark.parametrize("path", sorted(_modules()), ids=lambda p: os.path.relpath(p, PACKAGE))
def test_modules_stay_small(path):
  with open(path) as f:
    lines = sum(1 for _ in f)
  assert lines <= HARD_LIMIT, f"{lines} lines: split this module along its seams (one idea per file)"
  if lines > SOFT_LIMIT:
    warnings.warn(f"{os.path.relpath(path, PACKAGE)} has {lines} lines (> {SOFT_LIMIT}): is there a "
                  "seam to split along?", stacklevel=1)


def test_no_undefined_or_unused_names():
  # pyflakes' checks (ruff's F rules): a name lost when code moves between modules fails only at
  # run time, in whichever test reaches it, so it is checked over every Python file up front.
  root = os.path.dirname(PACKAGE)
  found = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache",
                          "gkd", "tests", "experiments", "configs", "scripts"],
                         cwd=root, capture_output=True, text=True)
  assert found.returncode == 0, found.stdout + found.stderr
