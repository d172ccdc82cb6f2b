"""One training run's parts (`Run`): models, teacher, objective, optimizer, data, batch sources,
eval and checkpoints, and how each step's batch is made.

Per step the batch source (gkd.sources: dataset, teacher, student, or replayed student samples)
supplies the responses; sampling is its own jitted program, outside the gradient. The teacher
then adds what it reads from the batch (gkd.teachers: a store's targets, another tokenizer's
view). Everything a resumed run needs to repeat an uninterrupted one is saved with the
checkpoint: the data iterator state, counters and each source's state (the teacher cache, the
replay buffer). gkd.train.loop drives a Run through its steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import errors, hosts, scoring, sharding, sources, teachers
from gkd.data.pipeline import check_data, eval_examples_for_config, loader_for_config
from gkd.eval.evaluator import Evaluator
from gkd.models import lora
from gkd.objectives import Objective, layer_distill, policy_gradient
from gkd.sampling import trim_to_bucket
from gkd.teachers import build as models_lib
from gkd.train import checkpoint, step as step_lib, validate
from gkd.train.optimizer import make_optimizer


class Run:
  """Everything one training run holds; `train()` drives it."""

  def __init__(self, config, workdir: str):
    validate.validate(config)
    self.config = config
    self.mesh = sharding.make_mesh(config)
    built = models_lib.build(config)
    self.tokenizer, student = built.tokenizer, built.student
    self.objective = Objective.from_config(config.objective)
    self.student_graph, student_state = nnx.split(student)
    params = {"student": student_state.to_pure_dict()}
    # A LoRA student (config.lora.rank > 0, gkd.models.lora): the base weights are frozen outside
    # the train state, which holds (and optimizes, and checkpoints) the adapters only.
    self.student_base, self.lora_scale = None, None
    if config.lora.rank:
      base = lora.frozen(params.pop("student"), config)
      self.student_base = jax.device_put(base, sharding.param_shardings(self.mesh, base))
      params["lora"] = lora.init(base, rank=config.lora.rank, targets=lora.targets_of(config),
                                 seed=config.seed + 11)
      self.lora_scale = config.lora.alpha / config.lora.rank
    self._student_params = jax.jit(functools.partial(lora.student_params, scale=self.lora_scale))
    self.teacher, self.teacher_params = teachers.from_config(config, built, self.mesh)
    validate.check_models(config, student.config.vocab_size, _max_seq_lens(student, self.teacher,
                                                                             self.teacher_params))
    check_data(config, self.tokenizer)
    params.update(_hidden_projections(config, built))
    self.optimizer = make_optimizer(config.optim, config.train.num_steps)
    state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, self.optimizer.init(params))
    if self.teacher.moves:  # its params are the train state's (updated and checkpointed with it)
      state, self.teacher_params = state._replace(teacher=self.teacher_params), None
    self.state_shardings = sharding.param_shardings(self.mesh, state)
    self.state = jax.device_put(state, self.state_shardings)
    self.train_step = jax.jit(
        functools.partial(step_lib.train_step, student_graph=self.student_graph,
                          teacher=self.teacher, objective=self.objective,
                          optimizer=self.optimizer, grad_accum_steps=config.optim.grad_accum_steps,
                          lora_scale=self.lora_scale),
        donate_argnums=0, out_shardings=(self.state_shardings, sharding.replicated(self.mesh)))
    self.evaluator = Evaluator(config, self.tokenizer, self.mesh, student_graph=self.student_graph,
                               teacher=self.teacher)
    self.sources = sources.build(config, sources.Context(
        config, self.mesh, self.tokenizer, self.student_graph, self.student_params, self.teacher,
        lambda: self.teacher_params))
    self.scheduler = next((s for s in self.sources.values() if s.schedules), None)
    # With sampling.num_samples = n, a step trains on train.batch_size rows: batch_size/n
    # prompts, each repeated n times (see make_batch).
    self.num_samples = config.sampling.num_samples
    self.loader = loader_for_config(config, self.tokenizer, split="train",
                                    batch_size=config.train.batch_size // self.num_samples, shuffle=True,
                                    num_epochs=None, num_examples=config.data.num_train_examples)
    # objective.rl_weight: on-policy samples are graded against their training examples.
    self.rewarder = None if not self.objective.rl_weight else policy_gradient.Rewarder(
        self.tokenizer, eval_examples_for_config(config, "train", config.data.num_train_examples or None))
    self.reward = None  # the last on-policy batch's mean reward, under rl_weight
    self.truncated = 0  # prompts/responses cut to the configured lengths (see gkd.data.pipeline)
    self.checkpointer = checkpoint.Checkpointer(workdir, every=config.train.checkpoint_every,
                                                keep=config.train.keep_checkpoints)
    self.rng = jax.random.key(config.seed)

  def student_params(self) -> dict:
    """The current student's full state dict (a LoRA student's base merged with its adapters)."""
    return self._student_params(self.state.params, self.student_base)

  def student(self) -> nnx.Module:
    """The current student as a module."""
    return nnx.merge(self.student_graph, self.student_params())

  def host_student(self) -> nnx.Module | None:
    """The current student as a module of host (NumPy) arrays on process 0, None elsewhere.

    Gathered one tensor at a time (every process takes part in each gather), so no device
    holds more than one whole tensor beyond its own shards.
    """
    leaves, treedef = jax.tree.flatten(self.student_params())
    primary = jax.process_index() == 0
    host = []
    for x in leaves:
      value = sharding.fetch(x)  # a gather: every process takes part, process 0 keeps it
      host.append(value if primary else None)
    return nnx.merge(self.student_graph, jax.tree.unflatten(treedef, host)) if primary else None

  def evaluate(self):
    return self.evaluator(self.student_params(), self.teacher_params)

  def evaluate_teacher(self):
    """The teacher's own evaluation on the eval examples (its task metrics and NLL), as the
    student's is made; None for a teacher without a model (a store)."""
    generator = self.teacher.generator(self.teacher_params)
    if generator is None:
      return None
    graph, params = generator
    return Evaluator(self.config, self.tokenizer, self.mesh, student_graph=graph)(params)

  def restore(self) -> int:
    """Loads the newest intact checkpoint (see gkd.train.checkpoint); returns its step (0: none)."""
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            self.state, self.state_shardings)
    found = self.checkpointer.restore(abstract, self.config)
    if found is None:
      return 0
    step, self.state, data_state, arrays = found
    saved = data_state["loaders"]  # one per process of the run that saved it
    # Resumed on another number of processes, each takes up the global position (every saved
    # host was at the same global batch) with its own share of the batches. A position that
    # does not fit one host's data stops every host.
    try:
      self.loader.set_state(saved[jax.process_index()] if len(saved) == jax.process_count()
                            else saved[0])
      problem = None
    except ValueError as e:
      problem = str(e)
    problems = [(i, p) for i, p in enumerate(hosts.gathered_json(problem)) if p]
    if problems:
      i, why = problems[0]
      raise checkpoint.CheckpointError(
          f"{self.checkpointer.workdir}: checkpoint step {step} holds the data position of other "
          f"data (process {i}: {why[:300]}). Rerun with the config and data it was written "
          "with, or use a new workdir.")
    self.truncated = int(data_state.get("truncated_total", 0))
    for name, source in self.sources.items():
      source.load(arrays, data_state.get(name))
    return step

  def save(self, step: int, *, force=False):
    """Checkpoints the state after `step` steps (the caller knows it: no device round trip)."""
    # Checkpoints are written by the primary process: each host's data-iterator state is
    # gathered first (each host restores its own entry).
    data = {"loaders": hosts.gathered_json(self.loader.get_state()),
            "truncated_total": self.truncated}
    arrays = {}
    for name, source in self.sources.items():
      source_arrays, source_data = source.state()
      if set(source_arrays) & set(arrays):
        raise ValueError(f"source {name!r} checkpoints arrays another source also names.")
      arrays.update(source_arrays)
      if source_data is not None:
        data[name] = source_data
    self.checkpointer.save(step, self.state, data, arrays, force=force)

  def source_for_step(self, step: int) -> str:
    """The step's batch source: by mix's fractions, or by a source that schedules steps itself
    (mix.replay); both from the step's own key."""
    if self.scheduler is not None:
      return self.scheduler.source_for_step(step)
    return sources.source_for_step(self.config.seed, step, self.config.mix)

  def after_step(self, step: int) -> tuple[dict, bool]:
    """The sources' metrics for the step just taken, and whether it must be logged."""
    info, log_now = {}, False
    for source in self.sources.values():
      more, now = source.after_step(step)
      info.update(more)
      log_now = log_now or now
    if self.reward is not None:
      info["rl_reward"], self.reward = self.reward, None
    return info, log_now

  def make_batch(self, step: int, source: str):
    """The step's batch: prompts from the loader, responses from `source` (or, for
    sources.MIXED, from each row's own source), then what the teacher reads from it. When the
    teacher's service fails (errors.ServiceError), the loader is put back: nothing is used up.

    With sampling.num_samples = n every prompt appears n times in a row (as TRL's
    num_generations): sampled sources give n different responses per prompt, the teacher
    cache keeps n per example, and dataset rows repeat their one reference response.
    """
    before = self.loader.get_state(), self.truncated  # restored if the teacher fails
    local = next(self.loader)
    n = self.num_samples
    if n > 1:
      local = {k: np.repeat(v, n, axis=0) for k, v in local.items()}
    local["sample"] = local["example_id"] * n + np.tile(np.arange(n), len(local["example_id"]) // n)
    self.truncated += int(np.sum(local["prompt_truncated"]) + np.sum(local["response_truncated"]))
    batch = sharding.global_batch(self.mesh, {k: local[k] for k in scoring.BATCH_KEYS})
    keys = {k: sharding.fetch(v) for k, v in sharding.global_batch(
        self.mesh, {k: local[k] for k in ("example_id", "sample")}).items()}
    rng = jax.random.fold_in(self.rng, step)
    rows = None
    if source == sources.MIXED:
      rows = sources.row_sources(self.config.seed, step, self.config.mix, self.config.train.batch_size)
      needed = tuple(i for i in range(len(sources.PER_ROW)) if np.any(rows == i))
      responses = [self.sources[sources.PER_ROW[i]].respond(batch, keys, rng) for i in needed]
      tokens, mask = sources.mixing.assemble(
          sharding.place_rows(self.mesh, {"rows": rows})["rows"],
          tuple((r.get("response_tokens", batch["response_tokens"]),
                 r.get("response_mask", batch["response_mask"])) for r in responses),
          indices=needed)
      batch.update(response_tokens=tokens, response_mask=mask)
    else:
      batch.update(self.sources[source].respond(batch, keys, rng))
    failure = None
    try:
      batch.update(self.teacher.prepare(batch, keys, self.mesh))
    except errors.ServiceError as e:
      failure = e
    # A service can fail on one process and not on another: all stop at this step or none does.
    if self.teacher.calls_service and not hosts.all_agree(failure is None):
      self.loader.set_state(before[0])  # nothing is consumed: a resumed run makes this batch again
      self.truncated = before[1]
      raise failure or errors.ServiceError("the teacher's service failed on another process.")
    for each in self.sources.values():
      each.observe(source, batch)
    if self.config.train.trim_responses:  # the teacher and the update skip all-padding columns
      batch = trim_to_bucket(batch)
    if self.rewarder is not None:  # every step carries it (zeros off-policy): one jit signature
      student = sources.PER_ROW.index("student")
      sampled = (rows == student) if rows is not None else \
          np.full(self.config.train.batch_size, source == "student")
      batch["rl_advantage"] = self._advantages(keys["example_id"], batch["response_tokens"],
                                               batch["response_mask"], sampled)
    return batch

  def _advantages(self, ids, tokens, mask, sampled):
    """The policy-gradient advantages [B] (batch-sharded) of the global batch's sampled rows."""
    advantages = np.zeros(len(sampled), np.float32)
    if sampled.any():  # every host grades the whole global batch: the same baseline everywhere
      rewards = self.rewarder.rewards(ids, sharding.fetch(tokens), sharding.fetch(mask), sampled)
      advantages = policy_gradient.leave_one_out(rewards, sampled)
      self.reward = float(rewards[sampled].mean())
    return sharding.place_rows(self.mesh, {"a": advantages})["a"]


def _max_seq_lens(student, teacher, teacher_params) -> dict:
  lens = {"student": student.config.max_seq_len}
  models = teacher.modules(teacher_params)
  if models:  # a teacher model (not a store)
    lens["teacher"] = min(t.config.max_seq_len for t in models)
  return lens


def _hidden_projections(config, built) -> dict:
  """Learned projections of a hidden-state term where the student is narrower than the teacher:
  one per layer_map pair, or one for the last hidden state (DistilBERT's). Trained and
  checkpointed with the student, never exported."""
  obj = config.objective
  if config.mode != "gkd" or not obj.hidden_loss or len(built.teachers) != 1:
    return {}
  ds, dt = built.student.config.dim, built.teachers[0].config.dim
  layer_map = layer_distill.parse(obj.get("layer_map", ""))
  if layer_map:
    projections = layer_distill.init_projections(layer_map, ds, dt, config.seed + 7)
    return {} if projections is None else {"layer_projections": projections}
  if ds == dt:
    return {}
  return {"projection": jax.random.normal(jax.random.key(config.seed + 7), (ds, dt)) / np.sqrt(ds)}
