"""The end-of-run summary: before/after rows from metrics.jsonl, and the example texts."""

from gkd.train import defaults, report


def test_summary_shows_before_and_after_and_the_example():
  c = defaults.default_config()
  history = [{"step": 0, "eval/forward_kl": 2.5, "eval/teacher_logprob_of_samples": -6.0},
             {"step": 1, "loss": 0.3},
             {"step": 10, "eval/forward_kl": 1.25, "eval/teacher_logprob_of_samples": -3.0,
              "eval/accuracy": 0.5}]
  text = report.summary(c, "runs/x", history, {"prompt": "1+1=", "response": "2", "teacher": "2",
                                              "student": "3"}, {"student": 2_500_000, "teacher": 10**7})
  rows = {line.split("  ")[1].strip(): line for line in text.splitlines() if line.startswith("  held")}
  assert "2.5000" in rows["held-out KL(teacher‖student)"] and "1.2500" in rows["held-out KL(teacher‖student)"]
  assert "accuracy (greedy)" in text and "-3.0000" in text and "-6.0000" in text
  assert "(2.50M params)" in text and "(10.00M params)" in text
  assert "reference: '2'" in text and "student: '3'" in text and "teacher: '2'" in text
  assert "runs/x" in text and "export/" in text


def test_summary_without_a_start_eval_has_no_before_column_values():
  c = defaults.default_config()
  c.mode = "sft"
  text = report.summary(c, "w", [{"step": 5, "eval/nll": 0.7}], {"prompt": "p", "student": "s"},
                        {"student": 1000})
  assert "fine-tuned (SFT)" in text and "0.7000" in text and "teacher:" not in text
