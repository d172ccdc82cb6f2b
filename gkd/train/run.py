"""One training run's parts (`Run`): models, objective, optimizer, data, teacher sources, eval and
checkpoints, and how each step's batch is made.

Per step the batch source (dataset / teacher / student, or replayed student samples under
mix.replay) supplies the responses: sampling is its own jitted program, outside the gradient.
Everything a resumed run needs to repeat an uninterrupted one is saved with the checkpoint: the
data iterator state, counters, the teacher cache and the replay buffer. gkd.train.loop drives a
Run through its steps.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from gkd import sampling, scoring, sharding
from gkd.data.pipeline import eval_examples_for_config, loader_for_config
from gkd.eval.evaluator import Evaluator
from gkd.models import lora
from gkd.objectives import Objective, layer_distill, policy_gradient
from gkd.sampling import speculative
from gkd.sources import mixing, replay
from gkd.teachers import ensemble, store, uld
from gkd.teachers.build import build_all, build_other_teachers
from gkd.train import checkpoint, validate
from gkd.train import step as step_lib
from gkd.train.optimizer import make_optimizer


class Run:
  """Everything one training run holds; `train()` drives it."""

  def __init__(self, config, workdir: str):
    validate.validate(config)
    self.config = config
    self.mesh = sharding.make_mesh(config)
    self.tokenizer, teacher_tokenizer, teacher, student = build_all(config)
    self.objective = Objective.from_config(config.objective)
    self.student_graph, student_state = nnx.split(student)
    params = {"student": student_state.to_pure_dict()}
    # A LoRA student (config.lora.rank > 0, gkd.models.lora): the base weights are frozen outside the
    # train state, which holds (and optimizes, and checkpoints) the adapters only.
    self.student_base, self.lora_scale = None, None
    if config.lora.rank:
      base = lora.frozen(params.pop("student"), config)
      self.student_base = jax.device_put(base, sharding.param_shardings(self.mesh, base))
      params["lora"] = lora.init(base, rank=config.lora.rank, targets=lora.targets_of(config),
                                 seed=config.seed + 11)
      self.lora_scale = config.lora.alpha / config.lora.rank
    self._student_params = jax.jit(functools.partial(lora.student_params, scale=self.lora_scale))
    self.teacher_graph, self.teacher_params, self.layer_map = None, None, ()
    # An offline store (config.teacher_store) stands in for the teacher: its responses and top-k
    # targets join each batch (make_batch), and there is no teacher model to run.
    self.store = None
    if config.get("teacher_store", ""):
      self.store = store.TeacherStore(config.teacher_store)
      self.store.check(config, vocab_size=student.config.vocab_size)
      self.teacher_graph = store.StoredTeacher(self.store.topk)
    if teacher is not None:
      self.teacher_graph, self.teacher_params = ensemble.split(
          [teacher, *build_other_teachers(config, teacher)], config, self.mesh)
      ds, dt = student.config.dim, teacher.config.dim
      self.layer_map = layer_distill.parse(config.objective.layer_map)
      if self.layer_map:
        layer_distill.check(self.layer_map, student.config.n_layers, teacher.config.n_layers)
        projections = layer_distill.init_projections(self.layer_map, ds, dt, config.seed + 7)
        if projections is not None:
          params["layer_projections"] = projections
      elif self.objective.hidden_loss and ds != dt:  # DistilBERT-style projection to the teacher's width
        params["projection"] = jax.random.normal(jax.random.key(config.seed + 7), (ds, dt)) / np.sqrt(ds)
    # A teacher with another tokenizer (objective.cross_tokenizer='uld') reads its own
    # tokenization of each batch's text, added by `teacher_view`; it neither generates nor
    # enters eval (KLs across vocabularies are undefined).
    cross = isinstance(self.teacher_graph, uld.CrossTokenizer)
    self.teacher_view = uld.TeacherView(
        self.tokenizer, teacher_tokenizer, self.mesh, prompt_len=config.data.max_prompt_len,
        response_len=config.data.max_response_len) if cross else None
    self.optimizer = make_optimizer(config.optim, config.train.num_steps)
    state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, self.optimizer.init(params))
    self.state_shardings = sharding.param_shardings(self.mesh, state)
    self.state = jax.device_put(state, self.state_shardings)
    self.train_step = jax.jit(
        functools.partial(step_lib.train_step, student_graph=self.student_graph,
                          teacher_graph=self.teacher_graph, objective=self.objective,
                          optimizer=self.optimizer, grad_accum_steps=config.optim.grad_accum_steps,
                          sft=config.mode == "sft", layer_map=self.layer_map,
                          lora_scale=self.lora_scale),
        donate_argnums=0, out_shardings=(self.state_shardings, sharding.replicated(self.mesh)))
    s = config.sampling
    tokens = dict(eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id)
    self.student_sampler = sampling.Sampler(self.student_graph, temperature=s.temperature,
                                            top_k=s.top_k, top_p=s.top_p, **tokens)
    # Sequence-level KD samples from the first teacher, and speculative KD asks it to vet the
    # student's tokens (see gkd.teachers.ensemble).
    self.speculative = None if not s.speculative_topk else speculative.SpeculativeSampler(
        self.student_graph, ensemble.primary(self.teacher_graph, self.teacher_params)[0],
        topk=s.speculative_topk, temperature=s.temperature,
        teacher_temperature=s.teacher_temperature, **tokens)
    self.replacement_rate = None  # the last on-policy batch's, under speculative KD
    self.teacher_sampler = None if teacher is None or cross else sampling.Sampler(
        ensemble.primary(self.teacher_graph, self.teacher_params)[0],
        temperature=s.teacher_temperature, top_k=s.top_k, top_p=s.top_p, **tokens)
    self.evaluator = Evaluator(config, self.tokenizer, self.mesh, student_graph=self.student_graph,
                               teacher_graph=None if cross or self.store else self.teacher_graph)
    # With sampling.num_samples = n, a step trains on train.batch_size rows: batch_size/n
    # prompts, each repeated n times (see make_batch).
    self.num_samples = config.sampling.num_samples
    self.loader = loader_for_config(config, self.tokenizer, split="train",
                                    batch_size=config.train.batch_size // self.num_samples, shuffle=True,
                                    num_epochs=None, num_examples=config.data.num_train_examples)
    self.teacher_cache = mixing.TeacherCache()
    # objective.rl_weight: on-policy samples are graded against their training examples.
    self.rewarder = None if not self.objective.rl_weight else policy_gradient.Rewarder(
        self.tokenizer, eval_examples_for_config(config, "train", config.data.num_train_examples or None))
    self.reward = None  # the last on-policy batch's mean reward, under rl_weight
    # mix.replay (gkd.sources.replay): a buffer of student samples, and p adapted from validation NLL.
    self.replay, self.schedule, self.validation = None, None, None
    if config.mix.replay.capacity:
      rc = config.mix.replay
      self.replay = replay.ReplayBuffer(rc.capacity)
      self.schedule = replay.AdaptiveSchedule(p=config.mix.student, eps=rc.eps, increment=rc.increment)
      on_validation = config.copy_and_resolve_references()
      on_validation.eval.update(split="validation", num_examples=rc.val_examples)
      self.validation = Evaluator(on_validation, self.tokenizer, self.mesh,
                                  student_graph=self.student_graph)
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

  def evaluate(self):
    return self.evaluator(self.student_params(), self.teacher_params)

  def restore(self) -> int:
    """Loads the newest intact checkpoint (see gkd.train.checkpoint); returns its step (0: none)."""
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            self.state, self.state_shardings)
    found = self.checkpointer.restore(abstract, self.config)
    if found is None:
      return 0
    step, self.state, data_state, arrays = found
    self.loader.set_state(data_state["loaders"][jax.process_index()])
    self.truncated = int(data_state.get("truncated_total", 0))
    self.teacher_cache.load_state_dict(replay.without_replay(arrays))
    if self.replay is not None:
      self.replay.load_state_dict(arrays)
      self.schedule.load(data_state["replay"])
    return step

  def save(self, step: int, *, force=False):
    """Checkpoints the state after `step` steps (the caller knows it: no device round trip)."""
    data = {"loaders": _all_processes(self.loader.get_state()), "truncated_total": self.truncated}
    arrays = self.teacher_cache.state_dict()
    if self.replay is not None:
      data["replay"] = self.schedule.state()
      arrays = {**arrays, **self.replay.state_dict()}
    self.checkpointer.save(step, self.state, data, arrays, force=force)

  def source_for_step(self, step: int) -> str:
    """The step's batch source: by mix's fractions, or under mix.replay by the adaptive
    schedule (student, replay or dataset); both from the step's own key."""
    c = self.config
    if self.replay is None:
      return mixing.source_for_step(c.seed, step, c.mix)
    return self.schedule.source(mixing.step_uniform(c.seed, step), step, c.train.num_steps,
                                self.replay.full)

  def adapt_replay(self) -> float:
    """Measures the validation NLL and lets the schedule adapt p to it; returns the NLL."""
    nll = self.validation.reference_nll(self.student_params())
    self.schedule.update(nll)
    return nll

  # -- responses from each source ------------------------------------------------------------
  @staticmethod
  def _sample(sampler, params, batch, key):
    out = sampler(params, batch["prompt_tokens"], batch["prompt_mask"], rng=key,
                  max_new_tokens=batch["response_tokens"].shape[1])
    return out.tokens, out.mask

  def _on_policy(self, batch, key):
    """The student's own samples; under speculative KD the teacher vets every token."""
    student = self.student_params()
    if self.speculative is None:
      return self._sample(self.student_sampler, student, batch, key)
    teacher = ensemble.primary(self.teacher_graph, self.teacher_params)[1]
    out = self.speculative(student, teacher, batch["prompt_tokens"],
                           batch["prompt_mask"], rng=key,
                           max_new_tokens=batch["response_tokens"].shape[1])
    self.replacement_rate = out.replacement_rate()
    return out.tokens, out.mask

  def _teacher_responses(self, batch, cache_keys, key):
    """Teacher generations for every row, sampled only for prompts not generated for before.

    The cache is replicated: every host adds every host's new rows. So every host sees the
    same cache (the decision to sample, a program all processes must enter together, is
    the same everywhere), an example keeps its one generation whichever host reads it in a
    later epoch, and the primary host's checkpoint holds the whole cache.
    """
    global_keys = sharding.fetch(sharding.global_batch(self.mesh, {"k": cache_keys})["k"])
    if self.teacher_cache.missing(global_keys):
      params = ensemble.primary(self.teacher_graph, self.teacher_params)[1]
      tokens, mask = self._sample(self.teacher_sampler, params, batch, key)
      self.teacher_cache.add(global_keys, sharding.fetch(tokens), sharding.fetch(mask))
    tokens, mask = self.teacher_cache.lookup(cache_keys)
    out = sharding.global_batch(self.mesh, {"response_tokens": tokens, "response_mask": mask})
    return out["response_tokens"], out["response_mask"]

  def make_batch(self, step: int, source: str):
    """The step's batch: prompts from the loader, responses from `source` (or, for
    mixing.MIXED, from each row's own source).

    With sampling.num_samples = n every prompt appears n times in a row (as TRL's
    num_generations): sampled sources give n different responses per prompt, the teacher
    cache keeps n per example, and dataset rows repeat their one reference response.
    """
    local = next(self.loader)
    n = self.num_samples
    if n > 1:
      local = {k: np.repeat(v, n, axis=0) for k, v in local.items()}
    cache_keys = local["example_id"] * n + np.tile(np.arange(n), len(local["example_id"]) // n)
    self.truncated += int(np.sum(local["prompt_truncated"]) + np.sum(local["response_truncated"]))
    batch = sharding.global_batch(self.mesh, {k: local[k] for k in scoring.BATCH_KEYS})
    if self.store is not None:  # the store serves the step's one source (checked at start)
      keys = local["example_id"] if self.store.kind == "dataset" else cache_keys
      stored = self.store.lookup(keys, local["prompt_tokens"], local["prompt_mask"],
                                 local["response_tokens"].shape[1])
      return self._trimmed(dict(batch, **sharding.global_batch(self.mesh, stored)))
    key = jax.random.fold_in(self.rng, step)
    if source == mixing.REPLAY:  # earlier student samples, prompts included (gkd.sources.replay)
      rows = self.replay.sample(jax.random.fold_in(key, 2), self.config.train.batch_size)
      batch = self._trimmed({k: jax.make_array_from_callback(
          v.shape, sharding.batch_sharding(self.mesh), lambda index, v=v: v[index])
          for k, v in rows.items()})
      return dict(batch, **self.teacher_view(batch)) if self.teacher_view else batch
    rows = None
    if source == mixing.MIXED:
      rows = mixing.row_sources(self.config.seed, step, self.config.mix, self.config.train.batch_size)
      needed = [name for i, name in enumerate(mixing.BATCH_SOURCES) if np.any(rows == i)]
    else:
      needed = [source]
    responses = {"dataset": (batch["response_tokens"], batch["response_mask"])}
    if "student" in needed:  # on-policy: the student's own samples; no gradient flows through them
      responses["student"] = self._on_policy(batch, key)
      if self.replay is not None:
        self.replay.add({k: sharding.fetch(v) for k, v in zip(
            replay.FIELDS, (batch["prompt_tokens"], batch["prompt_mask"], *responses["student"]))})
    if "teacher" in needed:  # sequence-level KD: fixed teacher outputs, generated once per prompt
      # Its own key: in a mixed step the student samples the same prompts with `key`.
      responses["teacher"] = self._teacher_responses(batch, cache_keys, jax.random.fold_in(key, 1))
    if rows is None:
      tokens, mask = responses[source]
    else:
      global_rows = jax.make_array_from_callback(rows.shape, sharding.batch_sharding(self.mesh),
                                                 lambda index: rows[index])
      tokens, mask = mixing.assemble(global_rows, tuple(responses[name] for name in needed),
                                     names=tuple(needed))
    batch = self._trimmed(dict(batch, response_tokens=tokens, response_mask=mask))
    if self.rewarder is not None:  # every step carries it (zeros off-policy): one jit signature
      sampled = (rows == mixing.BATCH_SOURCES.index("student")) if rows is not None else \
          np.full(self.config.train.batch_size, source == "student")
      batch["rl_advantage"] = self._advantages(local["example_id"], batch["response_tokens"],
                                               batch["response_mask"], sampled)
    return dict(batch, **self.teacher_view(batch)) if self.teacher_view else batch

  def _trimmed(self, batch):
    """Responses cut to the longest real one, in buckets (train.trim_responses; see
    sampling.trim_to_bucket): the teacher and the update skip all-padding columns."""
    return sampling.trim_to_bucket(batch) if self.config.train.trim_responses else batch

  def _advantages(self, local_ids, tokens, mask, sampled):
    """The policy-gradient advantages [B] (batch-sharded) of the global batch's sampled rows."""
    advantages = np.zeros(len(sampled), np.float32)
    if sampled.any():  # every host grades the whole global batch: the same baseline everywhere
      ids = sharding.fetch(sharding.global_batch(self.mesh, {"e": local_ids})["e"])
      rewards = self.rewarder.rewards(ids, sharding.fetch(tokens), sharding.fetch(mask), sampled)
      advantages = policy_gradient.leave_one_out(rewards, sampled)
      self.reward = float(rewards[sampled].mean())
    return jax.make_array_from_callback(advantages.shape, sharding.batch_sharding(self.mesh),
                                        lambda index: advantages[index])


def host_copy(tree):
  """Replicated global arrays as local ones (an all-gather; every process must call it)."""
  return jax.tree.map(lambda x: jnp.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def _all_processes(obj) -> list:
  """[obj of process 0, obj of process 1, ...] on every process, for JSON-able `obj`.

  Checkpoints are written by the primary process, so host-local state (each host's data
  iterator) is gathered first and each host restores its own entry.
  """
  if jax.process_count() == 1:
    return [obj]
  raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray(len(raw)))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[:len(raw)] = raw
  rows = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(rows[i, :int(n)]).decode()) for i, n in enumerate(sizes)]
