"""The committed results: under their size budget, stored packed, every number
experiments/README.md quotes from them equal to the file it names, and every figure it cites
drawn by the analysis notebook from the committed files.

A quoted result in experiments/README.md is followed by an HTML comment (invisible when
rendered) naming the line it comes from:

    reaches **0.802** [0.785, 0.819]<!-- from testbed_v3/prompts/summary.csv: JSD(0.9) & ,20000, -->

The path is relative to experiments/results; `<!-- alias P = testbed_v3/prompts -->` lets later
references write `P/summary.csv`. The text after the colon picks one line of the file (plain,
.gz, CSV, JSON or text): every part between " & " occurs on it, and on no other (different)
line. For a CSV, a trailing " #NAME" keeps only the columns whose header starts with NAME. The
number before the comment (or a range "a–b"), with its CI in brackets if it has one, must equal
consecutive numbers of that line, rounded to the README's decimals, either as they are or ×100
(points, percent). Every CI the README quotes ("m [low, high]") carries such a reference.
"""

import csv
import gzip
import io
import os
import re
import shutil

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
README = os.path.join(ROOT, "experiments", "README.md")
# The committed results, exports included (issue 25: about 20 MB). 4 MB above that is the room
# the two evidence arms' pre-registered sweeps need (arm 1: 45 runs of 2,000 test rows each).
BUDGET_BYTES = 24_000_000

_NUM = r"[+\-−]?\d+(?:,\d{3})*(?:\.\d+)?"
_COMMENT = re.compile(r"<!--\s*(.*?)\s*-->", re.S)
_QUOTED = re.compile(rf"(?P<v>{_NUM})(?:–(?P<to>{_NUM}))?(?:\*\*)?(?P<unit>%| points?)?"
                     rf"(?:\s*\[(?P<low>{_NUM}),\s*(?P<high>{_NUM})\])?$")
_CI = re.compile(rf"{_NUM}(?:\*\*)?(?: points?)?\s*\[{_NUM},\s*{_NUM}\]")
_SOURCE_NUM = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _number(text: str) -> tuple[float, int]:
  """A README number and its count of decimals ("−0.20" -> (-0.2, 2); "20,000" -> (20000, 0))."""
  text = text.replace("−", "-").replace(",", "")
  return float(text), len(text.split(".")[1]) if "." in text else 0


def _lines(path: str) -> list[str]:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    return f.read().splitlines()


def _source_numbers(path: str, locator: str) -> list[float]:
  """The numbers on the one line of `path` that holds every " & "-separated part of `locator`."""
  locator, _, column = locator.partition(" #")
  parts = [p.strip() for p in locator.split(" & ")]
  lines = _lines(path)
  hits = {line for line in lines if all(p in line for p in parts)}  # a repeated line is one
  if len(hits) != 1:
    raise AssertionError(f"{len(hits)} lines of {os.path.relpath(path, RESULTS)} hold "
                         f"{' & '.join(parts)!r}; a reference must pick exactly one")
  line = hits.pop().replace("−", "-")
  if column and not path.endswith(".csv"):
    raise AssertionError(f"' #{column}' picks a CSV column; {path} is not a CSV file")
  if column:
    header, row = next(csv.reader(io.StringIO(lines[0]))), next(csv.reader(io.StringIO(line)))
    line = " ".join(v for name, v in zip(header, row) if name.startswith(column))
  return [float(x) for x in _SOURCE_NUM.findall(line)]


def _agrees(quoted: list[tuple[float, int]], source: list[float]) -> bool:
  """Whether the quoted numbers are consecutive source numbers, rounded (as is, or ×100)."""
  for scale in (1, 100):
    for i in range(len(source) - len(quoted) + 1):
      if all(abs(source[i + j] * scale - q) <= 0.5 * 10 ** -d + 1e-9
             for j, (q, d) in enumerate(quoted)):
        return True
  return False


def check_references(text: str, root: str) -> tuple[int, list[str]]:
  """(the number of references checked, a line per failure) for a README's text."""
  aliases, failures, checked = {}, [], 0
  for m in _COMMENT.finditer(text):
    body = m.group(1)
    where = f"line {text.count(chr(10), 0, m.start()) + 1}"
    if body.startswith("alias "):
      name, _, path = body[len("alias "):].partition("=")
      aliases[name.strip()] = path.strip()
      continue
    if not body.startswith("from "):
      continue
    path, _, locator = body[len("from "):].partition(": ")
    head, _, rest = path.partition("/")
    path = os.path.join(root, aliases.get(head, head), rest) if rest else os.path.join(root, path)
    quoted = _QUOTED.search(text[:m.start()].rstrip().removesuffix("**"))
    if not quoted:
      failures.append(f"{where}: no number right before <!-- {body} -->")
      continue
    numbers = [_number(quoted.group(k)) for k in ("v", "to", "low", "high") if quoted.group(k)]
    try:
      source = _source_numbers(path, locator)
    except (AssertionError, OSError) as e:
      failures.append(f"{where}: {e}")
      continue
    checked += 1
    if not _agrees(numbers, source):
      failures.append(f"{where}: {quoted.group(0)!r} is not on {os.path.relpath(path, root)}'s "
                      f"line {locator!r}: {source}")
  for m in _CI.finditer(text):
    if not re.match(r"(?:\*\*)?\s*<!--\s*from ", text[m.end():]):
      where = f"line {text.count(chr(10), 0, m.start()) + 1}"
      failures.append(f"{where}: the CI {m.group(0)!r} names no source (<!-- from FILE: LINE -->)")
  return checked, failures


def test_every_number_the_experiments_readme_quotes_matches_its_file():
  with open(README) as f:
    checked, failures = check_references(f.read(), RESULTS)
  assert not failures, "\n".join(failures)
  assert checked > 100  # the references are there, and parsed


def _check_one(tmp_path, quoted: str, line: str, locator: str) -> list[str]:
  (tmp_path / "s.csv").write_text("method,acc_mean,acc_low,acc_high,nll_mean\n" + line + "\n")
  return check_references(f"x {quoted}<!-- from s.csv: {locator} -->\n", str(tmp_path))[1]


def test_the_reference_check_catches_a_changed_number(tmp_path):
  row = "JSD(0.9),0.802,0.7851,0.8187,0.0658"
  assert _check_one(tmp_path, "**0.802** [0.785, 0.819]", row, "JSD(0.9)") == []
  assert _check_one(tmp_path, "+80.2%", row, "JSD(0.9)") == []  # ×100: percent or points
  assert _check_one(tmp_path, "0.066", row, "JSD(0.9) #nll") == []
  assert _check_one(tmp_path, "0.785–0.819", row, "JSD(0.9)") == []  # a range
  assert _check_one(tmp_path, "0.785–0.829", row, "JSD(0.9)")
  assert _check_one(tmp_path, "0.803 [0.785, 0.819]", row, "JSD(0.9)")  # the mean moved
  assert _check_one(tmp_path, "0.802 [0.786, 0.819]", row, "JSD(0.9)")  # a bound moved
  assert _check_one(tmp_path, "0.7851", row, "JSD(0.9) #nll")  # not in that column
  assert _check_one(tmp_path, "0.802", row, "RKL")  # no such line
  (tmp_path / "two.txt").write_text("a 0.5\na 0.6\na 0.5\n")
  assert "2 lines" in check_references("0.5<!-- from two.txt: a -->", str(tmp_path))[1][0]
  assert check_references("0.5<!-- from two.txt: a 0.5 -->", str(tmp_path)) == (1, [])
  assert "names no source" in check_references("x 0.1 [0.0, 0.2] y", str(tmp_path))[1][0]


def test_aliases_and_gzipped_sources(tmp_path):
  (tmp_path / "sweep").mkdir()
  with gzip.open(tmp_path / "sweep" / "m.jsonl.gz", "wt") as f:
    f.write('{"step": 500, "eval/accuracy": 0.672}\n{"step": 1000, "eval/accuracy": 0.698}\n')
  text = ("<!-- alias S = sweep -->0.698<!-- from S/m.jsonl.gz: \"step\": 1000, -->, "
          "**0.67**<!-- from S/m.jsonl.gz: \"step\": 500, -->")
  assert check_references(text, str(tmp_path)) == (2, [])


def test_committed_results_stay_under_their_budget():
  """Two evidence arms will add results: the existing ones leave room for them."""
  total = sum(os.path.getsize(os.path.join(folder, name))
              for folder, _, files in os.walk(RESULTS) for name in files
              if "__pycache__" not in folder)
  assert total < BUDGET_BYTES, f"experiments/results holds {total / 1e6:.1f} MB"


def test_committed_per_example_rows_and_logs_are_stored_packed():
  """collect.sh packs eval_examples.jsonl into each collected directory's table and gzips each
  metrics.jsonl; a plain copy is the bulk that the budget above exists to keep out."""
  plain = [os.path.relpath(os.path.join(folder, name), RESULTS)
           for folder, _, files in os.walk(RESULTS) for name in files
           if name in ("eval_examples.jsonl", "metrics.jsonl")]
  assert not plain, f"{len(plain)} plain files, e.g. {plain[:3]}: run collect.sh to store them"


@pytest.mark.parametrize("quoted", ["0.5 [0.4, 0.6]", "+1.2 points [+0.2, +2.1]"])
def test_every_quoted_ci_needs_a_source(quoted):
  assert check_references(f"x {quoted} y", RESULTS)[1]


def readme_figures() -> list[str]:
  """The PNG files experiments/README.md cites, relative to experiments/results."""
  with open(README) as f:
    return sorted(set(re.findall(r"`([\w./,=-]+\.png)`", f.read())))


@pytest.mark.e2e  # runs the notebook on each cited sweep: ~20 s of CPU
def test_the_analysis_notebook_draws_every_figure_the_readme_cites(tmp_path):
  """Each cited figure exists, and the notebook, run headless on a copy of its sweep's committed
  files (figures removed), draws the same image again."""
  nbformat = pytest.importorskip("nbformat")
  from matplotlib import image
  from nbclient import NotebookClient
  figures = readme_figures()
  assert len(figures) >= 5 and all(os.path.exists(os.path.join(RESULTS, f)) for f in figures), \
      [f for f in figures if not os.path.exists(os.path.join(RESULTS, f))]
  sweeps = sorted({os.path.dirname(f) for f in figures})
  for sweep in sweeps:
    shutil.copytree(os.path.join(RESULTS, sweep), tmp_path / sweep,
                    ignore=shutil.ignore_patterns("*.png"))
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "analysis.ipynb"), as_version=4)
  client = NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
  with client.setup_kernel():  # one kernel, the notebook run once per sweep (as papermill would)
    for sweep in sweeps:
      client.execute_cell(nbformat.v4.new_code_cell(
          f"import os\nos.environ['GKD_SWEEP_DIR'] = {str(tmp_path / sweep)!r}"), 0)
      for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
          client.execute_cell(cell, index)
  for f in figures:
    drawn, committed = image.imread(tmp_path / f), image.imread(os.path.join(RESULTS, f))
    assert drawn.shape == committed.shape, f
    assert np.mean(np.abs(drawn - committed) > 0.1) < 0.01, f"{f} is not what the notebook draws"
