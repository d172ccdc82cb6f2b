"""The config-driven training loop: `train(config, workdir)`.

Per step: draw the batch source, let the run (gkd.train.run.Run) make the batch (sampling is
its own jitted program, outside the gradient), then run the one jit-compiled train step.
Metrics are fetched one step late so the host never stalls the device, and checkpoints carry
everything a resumed run needs (see Run.save), so a killed run resumes to the same parameters
as an uninterrupted one. Only states whose step metrics were fetched and found finite are
saved, and SIGTERM stops at a saved step (see gkd.train.guards). A run ends by writing
export/, eval_examples.jsonl and last final_metrics.json, whose presence marks it finished:
rerunning it then only reports it.
"""

import contextlib
import json
import logging
import os
import time

import jax
import numpy as np
import tqdm

from gkd import models, rundir, sources
from gkd.train import guards, report, validate, writer
from gkd.train.run import Run, host_copy

_log = logging.getLogger(__name__)


def train(config, workdir: str) -> dict:
  """Runs (or resumes) the config's training in `workdir`; returns the final eval metrics.

  A finished workdir (it has final_metrics.json) is only reported. Process 0 holds the
  workdir's lock throughout, so a second process on the same workdir fails at once.
  """
  busy = rundir.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with busy, guards.StopFlag().installed() as stop:
    final_path = os.path.join(workdir, rundir.FINAL_METRICS)
    if os.path.exists(final_path):
      with open(final_path) as f:
        final = json.load(f)
      print(f"{workdir} is finished (step {final.get('step')}); nothing to do. "
            f"Its metrics: {final_path}", flush=True)
      return {k: v for k, v in final.items() if k != "step"}
    if jax.process_index() == 0:
      rundir.remove_stale_tmp(workdir)
    run = Run(config, workdir)
    try:
      return _train(run, config, workdir, stop)
    finally:
      run.checkpointer.wait()  # a save in flight is of a verified step: let it complete
      run.checkpointer.close()


def _max_seq_lens(run) -> dict:
  lens = {"student": run.student().config.max_seq_len}
  models = run.teacher.modules(run.teacher_params)
  if models:  # a teacher model (not a store)
    lens["teacher"] = min(t.config.max_seq_len for t in models)
  return lens


def _train(run: Run, config, workdir: str, stop: guards.StopFlag) -> dict:
  validate.check_lengths(config, _max_seq_lens(run))
  start = run.restore()
  primary = jax.process_index() == 0  # process 0 alone writes the run's files
  if primary:
    writer.write_config(workdir, config)
  tc = config.train
  # Evals that a resume repeats (the one at step 0, the final one) must not leave two rows.
  redo_eval = (start == 0 and config.eval.at_start) or start >= tc.num_steps
  log = writer.MetricWriter(workdir, resume_step=start, redo_eval=redo_eval, primary=primary)
  bar = tqdm.tqdm(total=tc.num_steps, initial=start, disable=not tc.progress_bar or jax.process_index(),
                  desc=os.path.basename(os.path.normpath(workdir)), dynamic_ncols=True)
  pending = None  # (step, device metrics, host info): fetched one step late
  step_start = time.perf_counter()
  last_saved = start or None

  def flush():
    # Dispatch is asynchronous, so a step's wall time is the gap between step starts.
    nonlocal pending, step_start
    if pending is None:
      return
    step, metrics, info, log_now = pending
    pending = None
    metrics = jax.device_get(metrics)
    info = {k: float(v) if isinstance(v, jax.Array) else v for k, v in info.items()}
    now = time.perf_counter()
    info["step_s"], step_start = now - step_start, now
    info["train_tokens_per_s"] = float(metrics["response_tokens"]) / max(info["step_s"], 1e-9)
    finite = all(np.isfinite(metrics[k]) for k in guards.GUARDED if k in metrics)
    if step % tc.log_every == 0 or step == tc.num_steps or not finite or log_now:
      log.write(step, {**metrics, **info})
    guards.check_finite(step, metrics, workdir=workdir, last_saved=last_saved)
    bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", src=sources.letter(info["source"]),
                    tok_s=f"{info['train_tokens_per_s']:.0f}")

  def save(step: int):
    nonlocal last_saved
    flush()  # verify the metrics of the step that made this state before it is saved
    run.save(step, force=True)
    last_saved = step

  with jax.set_mesh(run.mesh):
    for source in run.sources.values():
      source.begin()
    if start == 0 and config.eval.at_start:  # the "before" point of learning curves and the report
      log.write(0, run.evaluate().metrics, prefix="eval/")
    warned = False
    for step in range(start, tc.num_steps):
      source = run.source_for_step(step)
      batch = run.make_batch(step, source)
      if not warned and run.truncated:
        warned = True
        _log.warning("some training examples are longer than data.max_prompt_len=%d or "
                     "data.max_response_len=%d tokens and are cut (a prompt loses its start, a "
                     "response its end); raise them to keep examples whole.",
                     config.data.max_prompt_len, config.data.max_response_len)
      run.state, metrics = run.train_step(run.state, batch, run.teacher_params, run.student_base)
      flush()
      more, log_now = run.after_step(step + 1)  # device values are fetched with the metrics
      info = {"source": source, "source_id": sources.source_id(source),
              "truncated_total": run.truncated, **more}
      pending = (step + 1, metrics, info, log_now)
      bar.update(1)
      stopping = guards.stop_agreed(stop.set, step + 1, tc.log_every)
      if run.checkpointer.due(step + 1) or stopping:
        save(step + 1)
      if stopping:
        run.checkpointer.wait()
        raise guards.Preempted(f"SIGTERM: saved step {step + 1} in {workdir}; rerun the same "
                               "command to resume.")
      if config.eval.every and (step + 1) % config.eval.every == 0 and step + 1 < tc.num_steps:
        flush()
        log.write(step + 1, run.evaluate().metrics, prefix="eval/")
        step_start = time.perf_counter()  # eval time is not train time
    save(tc.num_steps)  # no-op when that step is already saved
    run.checkpointer.wait()
    result = run.evaluate()
    final = result.metrics
    log.write(tc.num_steps, final, prefix="eval/")
  bar.close()
  log.close()
  if jax.process_count() > 1:  # process 0 exports and reports alone: it needs host copies
    run.state = run.state._replace(params=host_copy(run.state.params))
    run.teacher_params = host_copy(run.teacher_params)
    run.student_base = host_copy(run.student_base)
  if jax.process_index() == 0:
    # final_metrics.json goes last: its presence says everything before it is complete.
    rundir.atomic_dir(os.path.join(workdir, rundir.EXPORT),
                      lambda path: models.save_pretrained(run.student(), run.tokenizer, path))
    rundir.atomic_write(os.path.join(workdir, rundir.EVAL_EXAMPLES),
                        "".join(json.dumps(row) + "\n" for row in result.examples))
    rundir.atomic_write(os.path.join(workdir, rundir.FINAL_METRICS),
                        json.dumps({"step": tc.num_steps, **final}, indent=2))
    with jax.set_mesh(run.mesh):
      report.print_summary(run, workdir, result)
  return final
