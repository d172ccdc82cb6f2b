"""The report a run ends with: what ran, what moved (with 95% CIs), one example, where the outputs
are, and a figure of the learning curves.

Process 0 writes it at the end of every run from what the run already has: metrics.jsonl (the
curves), the per-example rows of the final evaluation and, with `eval.at_start`, of the step-0
one (eval_examples_start.jsonl, the "before"; with `eval.score_teacher` it also holds the
teacher's own answers). The only extra model call is the teacher's answer to the example's
prompt, when the teacher was not evaluated. The same content is printed as plain text and saved
as WORKDIR/report.md beside WORKDIR/learning_curves.png.

Intervals are percentile bootstraps over the evaluation examples (gkd.eval.stats): "before" and
"after" each on their own, and the change paired by example (the same examples, so the CI of the
change is narrower than either side's).
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from gkd import hosts, rundir, sampling, sharding, sources
from gkd.data.pipeline import encode_example
from gkd.eval import stats
from gkd.models import llama
from gkd.teachers.build import teacher_configs

REPORT = "report.md"
FIGURE = "learning_curves.png"
START_EXAMPLES = "eval_examples_start.jsonl"  # step 0's per-example rows (eval.at_start)
TEACHER = "teacher/"  # the prefix of the teacher's own scores, per example and in eval rows
ROWS = (  # (metric, label): the rows shown when the run measured them; the task metrics last
    ("forward_kl", "held-out KL(teacher‖student)"),
    ("reverse_kl", "held-out KL(student‖teacher)"),
    ("teacher_logprob_of_samples", "teacher log p of student samples"),
    ("nll", "NLL of the references"),
    ("rougeL", "ROUGE-L (greedy)"),
    ("accuracy", "accuracy (greedy)"),
)
# Means over examples, shown with CIs. A text task (graded by ROUGE) also logs its ROUGE-L as
# "accuracy": the report shows it once, as ROUGE-L.
TASK_METRICS = ("rougeL", "accuracy")
RESAMPLES = 2000  # enough for 2-digit CIs, and fast on a few thousand examples


@dataclasses.dataclass
class Report:
  """What the text and markdown forms both show."""
  title: str
  setup: list[tuple[str, str]]
  header: list[str]  # the results table's columns
  results: list[list[str]]
  verdict: list[str]  # sentences about the task metric
  example: list[tuple[str, str]]
  outputs: list[tuple[str, str]]


def _ordinal(k: int) -> str:
  suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
  return f"{k}{suffix}"


def describe_model(model_cfg) -> str:
  if model_cfg.source == "init":
    return f"a random {model_cfg.preset or 'model'} {dict(model_cfg.llama) or ''}".rstrip()
  if model_cfg.source == "derive":
    if model_cfg.derive_every_k:
      return f"every {_ordinal(model_cfg.derive_every_k)} layer of the teacher"
    return f"teacher layers {list(model_cfg.derive_layers)}"
  return f"{model_cfg.source} {_short(model_cfg.path) or 'SmolLM2-135M-Instruct (bundled)'}"


def _short(path: str) -> str:
  """A path relative to the working directory when it lies below it (shorter to read)."""
  if not os.path.isabs(path):
    return path
  relative = os.path.relpath(path)
  return path if relative.startswith(os.pardir) else relative


def _describe_teachers(config) -> str:
  if config.get("teacher_store", ""):
    return f"the teacher store {config.teacher_store}"
  if config.teacher.source == "self":
    return f"itself with privileged context ({config.teacher.self_weights} weights)"
  if config.teacher.source == "scorer":
    return f"the scoring server {config.teacher.url}"
  listed = teacher_configs(config)
  more = f" and {len(listed) - 1} more" if len(listed) > 1 else ""
  return describe_model(listed[0]) + more


def describe_objective(objective) -> str:
  if objective.get("cross_tokenizer", "") == "uld":
    return f"ULD (cross-tokenizer), alpha {objective.alpha}"
  if objective.get("estimator", "full") == "sampled_token":
    return "reverse KL, sampled-token estimator"
  kw = ", ".join(f"{k}={v}" for k, v in sorted(dict(objective.divergence_kw).items()))
  parts = [f"{objective.divergence}({kw})"]
  if objective.alpha != 1.0:
    parts.append(f"weight {objective.alpha:g}, hard-label CE {1 - objective.alpha:g}")
  if objective.temperature != 1.0:
    parts.append(f"temperature {objective.temperature:g}")
  if objective.hidden_loss:
    parts.append(f"+ {objective.hidden_weight:g} × {objective.hidden_loss} hidden-state term")
  if objective.get("rl_weight", 0.0):
    parts.append(f"+ {objective.rl_weight:g} × REINFORCE")
  return ", ".join(parts)


def _setup(config, sizes: dict) -> list[tuple[str, str]]:
  size = {role: f" ({n / 1e6:.2f}M params)" for role, n in sizes.items()}
  tc, ec = config.train, config.eval
  rows = [("run", "supervised fine-tuning (SFT)" if config.mode == "sft" else "distillation")]
  if config.mode != "sft":
    rows.append(("teacher", _describe_teachers(config) + size.get("teacher", "")))
  rows.append(("student", describe_model(config.student) + size["student"]))
  n = config.data.num_train_examples
  rows.append(("task", f"{config.data.task}, {f'{n:,}' if n else 'all'} training examples"))
  if config.mode != "sft":
    rows.append(("batch sources", sources.describe(config)))
    rows.append(("objective", describe_objective(config.objective)))
  rows.append(("training", f"{tc.num_steps:,} steps × batch {tc.batch_size}, learning rate "
                           f"{config.optim.learning_rate:g} ({config.optim.schedule})"))
  rows.append(("evaluation", f"{ec.split} split, greedy decoding"))
  return rows


def task_metric(final: list[dict]) -> str | None:
  """The task metric the verdict and the example are about: ROUGE-L for text tasks, else
  accuracy; None for an ungraded task."""
  return next((k for k in TASK_METRICS if _values(final, k)), None)


def _paired_rows(start, final) -> bool:
  """Whether step 0's rows and the final ones are the same examples in the same order."""
  return bool(start) and [r["example_id"] for r in start] == [r["example_id"] for r in final]


def _values(rows: list[dict] | None, key: str) -> list[float] | None:
  if not rows or any(key not in r for r in rows):
    return None
  return [float(r[key]) for r in rows]


def _ci(values, digits: int) -> str:
  ci = stats.mean_ci(values, num_resamples=RESAMPLES)
  return f"{ci.mean:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]"


def _paired(after, before) -> stats.Interval:
  return stats.paired_difference_ci(after, before, num_resamples=RESAMPLES)


def _results(history: list[dict], start, final, teacher) -> tuple[list[str], list[list[str]]]:
  """The metrics table: each ROW the final eval has, before and after, the change, and the
  teacher's own score. Task metrics (a mean over examples) come with bootstrap CIs from the
  per-example rows, the change paired by example; the others are per-token averages over the
  whole split and are shown as logged (metrics.jsonl)."""
  evals = [r for r in history if any(k.startswith("eval/") for k in r)]
  before = evals[0] if len(evals) > 1 and evals[0]["step"] == 0 else {}
  after = evals[-1] if evals else {}
  header = ["metric", "before", "after", "change"] + (["teacher"] if teacher else [])
  table = []
  for key, label in ROWS:
    if f"eval/{key}" not in after or (key == "accuracy" and "eval/rougeL" in after):
      continue
    digits = 3 if key in TASK_METRICS else 4
    b, a = (_values(start, key), _values(final, key)) if key in TASK_METRICS else (None, None)
    was, now = before.get(f"eval/{key}"), after[f"eval/{key}"]
    row = [label, _ci(b, digits) if b else _plain(was, digits), _ci(a, digits) if a else
           _plain(now, digits)]
    if a and b and _paired_rows(start, final):
      d = _paired(a, b)
      row.append(f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]")
    else:
      row.append("" if was is None else f"{now - was:+.{digits}f}")
    if teacher:
      t = _values(teacher, TEACHER + key) if key in TASK_METRICS else None
      row.append(_ci(t, digits) if t else _plain(before.get(f"eval/{TEACHER}{key}"), digits))
    table.append(row)
  return header, table


def _plain(value, digits: int) -> str:
  return "" if value is None else f"{value:.{digits}f}"


def _verdict(config, start, final, teacher) -> list[str]:
  """Sentences on the task metric: the teacher's score, and whether the student's moved
  beyond its interval."""
  key = task_metric(final)
  if key is None:
    return []
  label = dict(ROWS)[key]
  n = len(final)
  out = []
  t = _values(teacher, TEACHER + key) if teacher else None
  if t:
    ci = stats.mean_ci(t, num_resamples=RESAMPLES)
    out.append(f"The teacher scores {ci.mean:.3f} [{ci.low:.3f}, {ci.high:.3f}] {label} on the "
               f"same {n:,} {config.eval.split} examples.")
  b, a = _values(start, key), _values(final, key)
  if b and _paired_rows(start, final):
    d = _paired(a, b)
    where = ("beyond its 95% CI" if d.excludes_zero else "within its 95% CI: not resolved")
    direction = "rose" if d.mean > 0 else "fell" if d.mean < 0 else "stayed"
    out.append(f"The student's {label} {direction} from {sum(b) / n:.3f} to {sum(a) / n:.3f}: "
               f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] paired over the {n:,} examples, "
               f"{where}.")
  return out


def _scored_teacher(start) -> bool:
  return bool(start) and TEACHER + "completion" in start[0]


def choose_example(start, final, key: str | None) -> int:
  """The index of the example to show: the first whose task score went up where the teacher
  (when scored, in `start`) does at least as well, else the first whose score went up, else
  the first."""
  if not (key and _paired_rows(start, final)):
    return 0
  rose = [i for i, (b, a) in enumerate(zip(start, final)) if a.get(key, 0.0) > b.get(key, 0.0)]
  taught = [i for i in rose if start[i].get(TEACHER + key, -np.inf) >= final[i][key]]
  return (taught or rose or [0])[0]


def _example(prompt: str, reference: str, student_before, student_after, teacher, key,
             scores) -> list[tuple[str, str]]:
  def mark(who):
    return f" ({key} {scores[who]:g})" if key and scores.get(who) is not None else ""
  rows = [("prompt", repr(prompt)), ("reference", repr(reference))]
  if teacher is not None:
    rows.append(("teacher" + mark("teacher"), repr(teacher)))
  if student_before is not None:
    rows.append(("student before" + mark("before"), repr(student_before)))
  rows.append(("student after" + mark("after") if student_before is not None else "student",
               repr(student_after)))
  return rows


def _outputs(workdir: str) -> list[tuple[str, str]]:
  files = [(rundir.CONFIG, "the resolved config"),
           (rundir.METRICS, "train and eval metrics per logged step"),
           (rundir.TENSORBOARD + "/", "TensorBoard events"),
           (rundir.CHECKPOINTS + "/", "orbax checkpoints (rerun the command to resume)"),
           (rundir.EVAL_EXAMPLES, "the final evaluation, one row per example"),
           (START_EXAMPLES, "the step-0 evaluation, one row per example"),
           (rundir.FINAL_METRICS, "the final evaluation's metrics"),
           (rundir.EXPORT + "/", "the student in Hugging Face format (source=\"pretrained\")"),
           (REPORT, "this report"), (FIGURE, "learning curves")]
  return [(os.path.join(workdir, name), what) for name, what in files
          if name != START_EXAMPLES or os.path.exists(os.path.join(workdir, name))]


def build(config, workdir: str, history: list[dict], sizes: dict, *, final: list[dict],
          example: dict, start: list[dict] | None = None) -> Report:
  """The report of a finished run. `history`: metrics.jsonl's rows; `final`/`start`: the
  per-example rows of the final and step-0 evaluations (start holds the teacher's as
  "teacher/..." keys when it was scored); `sizes`: parameter counts by role; `example`: the
  chosen example's "index", "prompt", "response" and, when known, "teacher" texts."""
  teacher = start if _scored_teacher(start) else None
  key = task_metric(final)
  i = example["index"]
  before = start[i] if _paired_rows(start, final) else None
  scores = {"after": final[i].get(key), "before": before.get(key) if before else None,
            "teacher": teacher[i].get(TEACHER + key) if teacher and key else None}
  header, results = _results(history, start, final, teacher)
  what = "fine-tuned" if config.mode == "sft" else "distilled"
  return Report(
      title=f"gkd: {what} for {config.train.num_steps:,} steps, evaluated on {len(final):,} "
            f"{config.eval.split} examples",
      setup=_setup(config, sizes), header=header, results=results,
      verdict=_verdict(config, start, final, teacher),
      example=_example(example["prompt"], example["response"],
                       before["completion"] if before else None, final[i]["completion"],
                       example.get("teacher"), key, scores),
      outputs=_outputs(workdir))


def _columns(rows: list[list[str]], indent: str = "  ") -> list[str]:
  widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
  return [indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def text(report: Report) -> str:
  """The report as the terminal shows it."""
  lines = [report.title]
  lines += _columns([[k, v] for k, v in report.setup])
  if report.results:
    lines += ["", "  What moved (task metrics with 95% bootstrap CIs over the examples, the change "
              "paired by example):"]
    lines += _columns([report.header] + report.results)
  lines += [""] + [f"  {s}" for s in report.verdict]
  lines += ["", "  Example:"] + _columns([[k, v] for k, v in report.example], "    ")
  lines += ["", "  Outputs:"] + _columns([[p, w] for p, w in report.outputs], "    ")
  return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
  def cells(r):
    return "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"
  return [cells(header), "|" + "---|" * len(header)] + [cells(r) for r in rows]


def markdown(report: Report) -> str:
  """The report as WORKDIR/report.md."""
  lines = [f"# {report.title}", "", "## Setup", ""]
  lines += _md_table(["", ""], [list(r) for r in report.setup])
  if report.results:
    lines += ["", "## What moved", "",
              "Task metrics with 95% percentile-bootstrap CIs over the evaluation examples, the "
              "change paired by example; the other rows are per-token averages over the split, as "
              "logged in metrics.jsonl.", ""]
    lines += _md_table(report.header, report.results)
  if report.verdict:
    lines += [""] + report.verdict
  lines += ["", f"![learning curves]({FIGURE})", "", "## Example", ""]
  lines += _md_table(["", ""], [[k, f"`{v}`"] for k, v in report.example])
  lines += ["", "## Outputs", ""] + _md_table(["path", "what"], [list(r) for r in report.outputs])
  return "\n".join(lines) + "\n"


def start_rows(student, teacher) -> list[dict]:
  """Step 0's per-example rows: the student's, with the teacher's under TEACHER keys."""
  rows = [dict(r) for r in student.examples]
  if teacher is not None:
    for row, t in zip(rows, teacher.examples):
      row.update({TEACHER + k: v for k, v in t.items() if k != "example_id"})
  return rows


def teacher_completion(config, tokenizer, teacher_graph, teacher_params, prompt: str) -> str:
  """The teacher's greedy completion of one prompt, encoded as the loaders encode it."""
  row = encode_example(tokenizer, prompt, "", max_prompt_len=config.data.max_prompt_len,
                       max_response_len=1, chat_template=config.data.chat_template)
  sampler = sampling.Sampler(teacher_graph, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  out = sampler(teacher_params, jnp.asarray(row["prompt_tokens"][None]),
                jnp.asarray(row["prompt_mask"][None]), rng=jax.random.key(0),
                max_new_tokens=config.eval.max_new_tokens or config.data.max_response_len,
                temperature=0.0)
  tokens, mask = sharding.fetch(out.tokens), sharding.fetch(out.mask)  # global arrays: gathered
  return tokenizer.decode(tokens[0][mask[0]])


def chosen_example(run, workdir: str, result) -> dict | None:
  """The example the report shows: its "index" among the final rows, "prompt", "response" and,
  when known, the teacher's "teacher" answer. Every process calls it: the primary chooses, and
  a teacher that was not scored at step 0 answers in a program over all processes. None when
  the evaluation had no examples."""
  final = result.examples
  if not final:
    return None

  def choose():
    start = rundir.read_jsonl(os.path.join(workdir, START_EXAMPLES)) or None
    i = choose_example(start, final, task_metric(final))
    return {"index": i, "teacher": start[i][TEACHER + "completion"]
            if _scored_teacher(start) else None}
  example = hosts.decided_by_primary(choose)
  raw = run.evaluator.examples[final[example["index"]]["example_id"]]
  example.update(prompt=raw["prompt"], response=raw["response"])
  generator = run.teacher.generator(run.teacher_params)
  if example["teacher"] is None and generator is not None:
    example["teacher"] = teacher_completion(run.config, run.tokenizer, *generator, raw["prompt"])
  return example


def write(run, workdir: str, result, example: dict | None) -> Report | None:
  """Builds the report of a finished run with `chosen_example`'s example, writes report.md and
  the figure into `workdir`, and returns it (process 0 only; None without examples)."""
  if example is None:
    return None
  final = result.examples
  start = rundir.read_jsonl(os.path.join(workdir, START_EXAMPLES)) or None
  sizes = {"student": llama.count_params(run.student())}
  if run.teacher.modules(run.teacher_params):
    sizes["teacher"] = sum(llama.count_params(t) for t in run.teacher.modules(run.teacher_params))
  history = rundir.read_jsonl(os.path.join(workdir, rundir.METRICS))
  report = build(run.config, workdir, history, sizes, final=final, example=example,
                 start=start)
  from gkd.eval import plots  # here: matplotlib is only needed at the end of a run
  plots.metric_curves(history, os.path.join(workdir, FIGURE), teacher_prefix=TEACHER)
  rundir.atomic_write(os.path.join(workdir, REPORT), markdown(report))
  return report


def save_start(workdir: str, rows: list[dict]) -> None:
  """Keeps step 0's per-example rows for the report's "before" (atomic: a resume rewrites it)."""
  rundir.atomic_write(os.path.join(workdir, START_EXAMPLES),
                      "".join(json.dumps(r) + "\n" for r in rows))
