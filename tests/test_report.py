"""The end-of-run report: its tables (no raw configs), the intervals, the example, report.md and
the learning-curve PNG."""

import os

import numpy as np
import pytest

from gkd.eval import stats
from gkd.eval import plots
from gkd.train import defaults, report

N = 40


def rows(accuracy, completion="x", **more):
  return [{"example_id": i, "completion": f"{completion}{i}", "accuracy": float(a),
           "nll": 0.5 + 0.01 * i, **{k: v[i] for k, v in more.items()}}
          for i, a in enumerate(accuracy)]


def distil_config():
  c = defaults.default_config()
  c.teacher.update(source="pretrained", path="models/teacher")
  c.student.update(source="derive", derive_every_k=3)
  c.objective.divergence_kw = {"beta": 0.9}
  c.mix.update(dataset=0.0, student=1.0)
  c.train.num_steps = 30
  return c


HISTORY = [{"step": 0, "eval/accuracy": 0.25, "eval/nll": 0.7, "eval/forward_kl": 2.5,
            "eval/teacher/accuracy": 0.9, "eval/teacher/nll": 0.05, "eval/num_examples": N},
           {"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.25}, {"step": 30, "loss": 0.125},
           {"step": 30, "eval/accuracy": 0.75, "eval/nll": 0.6, "eval/forward_kl": 1.25,
            "eval/num_examples": N}]


def make(start_acc, final_acc, teacher_acc=None, example=None):
  start = rows(start_acc, "before")
  if teacher_acc is not None:
    for row, t in zip(start, rows(teacher_acc, "teacher")):
      row.update({report.TEACHER + k: v for k, v in t.items() if k != "example_id"})
  final = rows(final_acc, "after")
  key = "accuracy"
  i = report.choose_example(start, final, key)
  ex = {"index": i, "prompt": "p", "response": "r", **(example or {})}
  return report.build(distil_config(), "runs/x", HISTORY, {"student": 210_000,
                                                           "teacher": 1_590_000},
                      final=final, example=ex, start=start), start, final


def test_the_table_shows_before_after_the_paired_change_and_the_teacher_with_cis():
  start_acc = [0] * 30 + [1] * 10
  final_acc = [1] * 30 + [1] * 10
  teacher_acc = [1] * 36 + [0] * 4
  r, start, final = make(start_acc, final_acc, teacher_acc)
  assert r.header == ["metric", "before", "after", "change", "teacher"]
  table = {row[0]: row[1:] for row in r.results}
  before, after, change, teacher = table["accuracy (greedy)"]
  ci = stats.mean_ci(start_acc, num_resamples=report.RESAMPLES)
  assert before == f"0.250 [{ci.low:.3f}, {ci.high:.3f}]" and ci.low < 0.25 < ci.high
  assert after == "1.000 [1.000, 1.000]"
  # Every example that changed went 0 -> 1: the paired change is +0.75, and its interval is
  # that of the mean of 30 ones and 10 zeros.
  d = stats.mean_ci([1] * 30 + [0] * 10, num_resamples=report.RESAMPLES)
  assert change == f"+0.750 [+{d.low:.3f}, +{d.high:.3f}]"
  assert teacher.startswith("0.900 [")
  # Per-token metrics are shown as logged (the whole split's token average), without CIs, and
  # the teacher's own where it was scored.
  assert table["NLL of the references"] == ["0.7000", "0.6000", "-0.1000", "0.0500"]
  assert table["held-out KL(teacher‖student)"] == ["2.5000", "1.2500", "-1.2500", ""]
  assert any("from 0.250 to 1.000: +0.750" in s and "beyond its 95% CI" in s for s in r.verdict)
  assert any(s.startswith("The teacher scores 0.900 [") for s in r.verdict)


def test_an_unchanged_metric_is_reported_as_not_resolved():
  acc = [0, 1] * (N // 2)
  r, _, _ = make(acc, acc)
  assert any("stayed from 0.500 to 0.500: +0.000" in s and "not resolved" in s
             for s in r.verdict)
  assert r.header == ["metric", "before", "after", "change"]


def test_the_example_is_the_first_that_went_from_wrong_to_right():
  start = [0, 1, 0, 0] + [0] * (N - 4)
  final = [0, 1, 1, 0] + [0] * (N - 4)
  assert report.choose_example(rows(start), rows(final), "accuracy") == 2
  assert report.choose_example(rows(start), rows(start), "accuracy") == 0
  assert report.choose_example(None, rows(final), "accuracy") == 0
  # Where the teacher was scored, an example it also answers right comes first.
  with_teacher = rows(start, **{"teacher/accuracy": [0, 0, 0] + [1] * (N - 3)})
  improved = final[:5] + [1] + final[6:]
  assert report.choose_example(with_teacher, rows(improved), "accuracy") == 5
  assert report.choose_example(rows(start), rows(improved), "accuracy") == 2
  r, _, _ = make(start, final, final, example={"teacher": "t2"})
  shown = dict(r.example)
  assert shown["student before (accuracy 0)"] == "'before2'"
  assert shown["student after (accuracy 1)"] == "'after2'"
  assert shown["teacher (accuracy 1)"] == "'t2'"


def test_without_a_start_eval_the_report_has_no_before():
  c = defaults.default_config()
  c.mode = "sft"
  final = rows([1, 0, 1, 1])
  history = [{"step": 5, "loss": 1.0}, {"step": 5, "eval/accuracy": 0.75, "eval/nll": 0.7}]
  r = report.build(c, "w", history, {"student": 1000}, final=final,
                   example={"index": 0, "prompt": "p", "response": "r"})
  out = report.text(r)
  assert "supervised fine-tuning (SFT)" in out and "teacher" not in out
  table = {row[0]: row[1:] for row in r.results}
  assert table["accuracy (greedy)"][0] == "" and table["accuracy (greedy)"][1].startswith("0.750 [")
  assert r.verdict == [] and dict(r.example) == {"prompt": "'p'", "reference": "'r'",
                                                  "student": "'x0'"}


def test_text_and_markdown_show_the_same_readable_content():
  r, _, _ = make([0] * 20 + [1] * 20, [1] * 40, [1] * 40)
  out, md = report.text(r), report.markdown(r)
  setup = dict(r.setup)
  assert setup["student"] == "every 3rd layer of the teacher (0.21M params)"
  assert setup["teacher"] == "pretrained models/teacher (1.59M params)"
  assert setup["objective"] == "generalized_jsd(beta=0.9)"
  assert setup["batch sources"] == "student samples (on-policy) 100%"
  assert setup["training"] == "30 steps × batch 8, learning rate 0.0003 (cosine)"
  for content in (out, md):
    assert "ConfigDict" not in content and "{'" not in content and "3th" not in content
    for row in r.results:
      assert all(cell in content for cell in row)
    for path, _ in r.outputs:
      assert path in content
  assert md.startswith("# gkd: distilled for 30 steps")
  assert f"![learning curves]({report.FIGURE})" in md
  assert "| accuracy (greedy) | 0.500 [" in md


def test_ordinals():
  assert [report._ordinal(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 111)] == \
      ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "111th"]


def test_the_figure_has_the_train_loss_and_each_eval_metric(tmp_path):
  path = tmp_path / "curves.png"
  panels = plots.metric_curves(HISTORY, str(path))
  assert panels == ["loss", "eval/accuracy", "eval/forward_kl", "eval/nll"]  # no teacher panels
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  import matplotlib.image
  image = matplotlib.image.imread(str(path))
  assert image.shape[1] > image.shape[0] > 100 and np.std(image) > 0  # a 4-panel row, not blank


@pytest.mark.parametrize("bad", [[], [{"step": 3, "eval/accuracy": 0.5}]])
def test_the_figure_of_a_run_without_train_rows_still_draws(tmp_path, bad):
  assert plots.metric_curves(bad, str(tmp_path / "c.png"))[0] == "loss"
  assert os.path.getsize(tmp_path / "c.png") > 0


def test_rows_of_other_examples_are_not_paired():
  """A step-0 file from another eval (other example ids) gives no paired change or example."""
  start = rows([0] * N)
  for row in start:
    row["example_id"] += 1000
  final = rows([1] * N)
  assert report.choose_example(start, final, "accuracy") == 0
  r = report.build(distil_config(), "w", HISTORY, {"student": 1}, final=final, start=start,
                   example={"index": 0, "prompt": "p", "response": "r"})
  assert dict(r.example)["student"] == "'x0'" and "student before" not in dict(r.example)
  assert {row[0]: row[3] for row in r.results}["accuracy (greedy)"] == "+0.500"
  assert not any("paired" in s for s in r.verdict)


def test_a_text_task_shows_rouge_once_and_is_judged_by_it():
  final = [{"example_id": i, "completion": "c", "accuracy": s, "rougeL": s, "rouge1": s}
           for i, s in enumerate(np.linspace(0, 1, N))]
  start = [dict(r, accuracy=0.0, rougeL=0.0, rouge1=0.0) for r in final]
  history = [{"step": 0, "eval/accuracy": 0.0, "eval/rougeL": 0.0},
             {"step": 9, "eval/accuracy": 0.5, "eval/rougeL": 0.5}]
  r = report.build(distil_config(), "w", history, {"student": 1}, final=final, start=start,
                   example={"index": 1, "prompt": "p", "response": "r"})
  assert [row[0] for row in r.results] == ["ROUGE-L (greedy)"]
  assert report.choose_example(start, final, report.task_metric(final)) == 1
  assert "The student's ROUGE-L (greedy) rose from 0.000 to 0.500" in r.verdict[0]
