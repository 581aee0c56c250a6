"""A training run assembled from a ``TrainConfig``, ready to run.

Read top to bottom (orbit style: build everything, then hand it to the
controller): create the strategy (the first TensorFlow op, as
MultiWorkerMirroredStrategy requires), plan the data and the run's
arithmetic (``run_plan.RunPlan``), build model, optimizer and checkpoint
under the strategy, resume, then build the input, the inner step and the
outer loop's actions. ``trainer`` runs what ``assemble`` returns.
"""

import dataclasses
import os
from typing import Any, Callable, List, Optional, Tuple

from absl import logging
import tensorflow as tf

from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import records as records_lib
from pyramidnet_tf.model_dir import access as model_dir_lib
from pyramidnet_tf.model_dir import ema as ema_lib
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.training import actions as actions_lib
from pyramidnet_tf.training import best_checkpoint as best_checkpoint_lib
from pyramidnet_tf.training import checkpointing
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import data_plan as data_plan_lib
from pyramidnet_tf.training import epoch_log as epoch_log_lib
from pyramidnet_tf.training import errors
from pyramidnet_tf.training import evaluator as evaluator_lib
from pyramidnet_tf.training import fault_injection
from pyramidnet_tf.training import finetune_run
from pyramidnet_tf.training import loop
from pyramidnet_tf.training import preemption
from pyramidnet_tf.training import progress as progress_lib
from pyramidnet_tf.training import resume as resume_lib
from pyramidnet_tf.training import run_plan as run_plan_lib
from pyramidnet_tf.training import run_state
from pyramidnet_tf.training import schedules
from pyramidnet_tf.training import step as step_lib
from pyramidnet_tf.training import summaries as summaries_lib


@dataclasses.dataclass
class Run:
  """Everything a run needs from its start to its result.

  Attributes:
    config: the run's configuration.
    strategy: the distribution strategy.
    num_workers: hosts taking part.
    chief: this worker writes the model directory.
    claim: the chief's ``access.RunClaim`` of the model dir, else None.
    data: the data plan.
    plan: the run's arithmetic, resumed (``run_plan.RunPlan``).
    state: model, step counter, optimizer, loss scale, EMA.
    checkpointer: ``checkpointing.Checkpointer``.
    model_dir: the guard of the model directory (``ModelDirGuard``).
    summaries: ``summaries.Summaries``.
    evaluate: the evaluation (``actions.EvalAction``), or None.
    best_checkpoint: ``best_checkpoint.BestCheckpoint``, or None.
    train_log: the train log action (its ``metrics``).
    epoch_log: ``epoch_log.EpochLog``.
    progress: ``progress.TrainProgress``.
    controller: the outer loop (``loop.Controller``).
    checkpoint_every: steps between the loop's checkpoints.
    input_watchdog: the tf.data service's watchdog, or None.
  """
  config: config_lib.TrainConfig
  strategy: Any
  num_workers: int
  chief: bool
  claim: Any
  data: data_plan_lib.DataPlan
  plan: run_plan_lib.RunPlan
  state: run_state.TrainState
  checkpointer: checkpointing.Checkpointer
  model_dir: "ModelDirGuard"
  summaries: Any
  evaluate: Optional[actions_lib.EvalAction]
  best_checkpoint: Any
  train_log: actions_lib.TrainLog
  epoch_log: epoch_log_lib.EpochLog
  progress: progress_lib.TrainProgress
  controller: loop.Controller
  checkpoint_every: int
  input_watchdog: Any = None


def _check_batches(config: config_lib.TrainConfig, replicas: int) -> None:
  """The training batch against the replica count, XLA against sync BN
  (the eval batch is rounded up to fit, ``evaluator.batch_for_replicas``)."""
  batch = config.schedule.batch_size
  if batch % replicas:
    raise errors.TrainError(
        f"--batch_size={batch} must be a multiple of the {replicas} "
        "replicas (per-replica batch = global / replicas)")
  if config.runtime.jit_compile and config.runtime.sync_bn and replicas > 1:
    raise errors.TrainError(
        "--jit_compile cannot be combined with --sync_bn on more than one "
        f"replica ({replicas} here): the sync-BN all-reduce cannot run inside "
        "the XLA-compiled forward/backward. Drop one of the two flags.")


def model_metadata(config: config_lib.TrainConfig,
                   data: data_plan_lib.DataPlan, class_names):
  """The metadata of ``model_config.json`` (what evaluate/export/predict
  need besides the weights), derived from the config."""
  return {
      "source": checkpointing.TRAINER_SOURCE,
      "data_dir": config.data.data_dir,
      "data": data.kind,
      "preprocessing": data.preprocessing.to_json(),
      "class_names": class_names,
      "ema_decay": config.schedule.ema_decay,
      "flags": config.flat(),
  }


def plan_resume(config: config_lib.TrainConfig, data: data_plan_lib.DataPlan,
                start_step: int, restored: Optional[str]
                ) -> Tuple[resume_lib.ResumePlan, list]:
  """Checks this launch against the launches that trained the checkpoint
  (``training.resume``) and says what it changes.

  Args:
    config: the run's configuration.
    data: the data plan.
    start_step: the step counter restored (0: fresh).
    restored: the checkpoint resumed from, or None.

  Returns:
    (the launch's ``resume.ResumePlan``, the launches recorded before it).

  Raises:
    TrainError: the launch changes what a step means without
      --rebase_resume, or train_config.json cannot be read.
  """
  model_dir = config.output.model_dir
  launches = []
  if restored:
    try:
      launches = resume_lib.launches_of(config_lib.read_json(model_dir))
    except config_lib.ConfigError as e:
      raise errors.TrainError(str(e)) from None
    if not launches:
      logging.warning(
          "%s has no %s: the settings that trained %s are unknown, so "
          "this launch cannot be checked against them; it resumes at "
          "example %d (step %d x --batch_size=%d)", model_dir,
          config_lib.CONFIG_FILE, restored, start_step *
          config.schedule.batch_size, start_step, config.schedule.batch_size)
  try:
    result = resume_lib.plan(
        launches, start_step, config.flat(),
        data_plan_lib.data_identity(config, data), model_dir=model_dir,
        rebase=config.output.rebase_resume)
  except resume_lib.ResumeRefused as e:
    raise errors.TrainError(str(e)) from None
  if result.changed:
    logging.info("resuming with changed settings: %s",
                 ", ".join(result.changed))
  if result.rebase_text:
    logging.info("%s", result.rebase_text)
  elif config.output.rebase_resume and restored:
    logging.info("%s: nothing to re-base (the settings that change what a "
                 "step means are those the run was trained with)",
                 resume_lib.REBASE_FLAG)
  return result, [launch.to_json() for launch in launches]


class ModelDirGuard:
  """The chief's hold on ``--model_dir``: the configs the checkpoints need
  (written after the first checkpoint of a fresh run, so a model dir with a
  config always had one; written again when deleted during the run) and
  the check that the run still owns the directory."""

  def __init__(self, model_dir: str, claim, global_step,
               write_configs: Callable[[], None]):
    self.model_dir = model_dir
    self.claim = claim
    self.global_step = global_step
    self.write_configs = write_configs

  def check_ownership(self) -> None:
    """Before each save and at the end: the run still owns --model_dir."""
    problem = model_dir_lib.ownership_problem(
        self.model_dir, self.claim.lock if self.claim else None)
    if problem is not None:
      raise model_dir_lib.ModelDirError(
          f"{problem}: stopped at step {int(self.global_step.numpy())} "
          "without writing there again (its checkpoints went with it, and "
          "another trainer may use the path now); put it back to resume "
          "from its last checkpoint, or run the command again to start over")

  def restore_configs(self) -> None:
    """After each save and at the end: the configs the checkpoints need."""
    gone = [name for name in (model_io.CONFIG_FILE, config_lib.CONFIG_FILE)
            if not tf.io.gfile.exists(os.path.join(self.model_dir, name))]
    if gone:
      logging.warning("%s deleted from %s during the run: writing %s again",
                      " and ".join(gone), self.model_dir,
                      "them" if len(gone) > 1 else "it")
      self.write_configs()

  def attach(self, checkpointer, restored: Optional[str]) -> None:
    """Writes the configs now (a resumed run) or after the first save (a
    fresh one), and guards every save."""
    if restored:
      self.write_configs()
    else:
      checkpointer.after_first_save(self.write_configs)
    checkpointer.around_saves(self.check_ownership, self.restore_configs)


def _restore(config: config_lib.TrainConfig, strategy,
             state: run_state.TrainState
             ) -> Tuple[checkpointing.Checkpointer, Optional[str]]:
  """The run's checkpointer, with the newest intact checkpoint restored
  (None: a fresh start)."""
  output = config.output
  try:
    checkpointing.check_config(output.model_dir, state.model)
  except checkpointing.ConfigMismatchError as e:
    raise errors.TrainError(str(e)) from None
  # Guards every float variable of the checkpoint against NaN/Inf.
  checkpointer = checkpointing.Checkpointer(
      output.model_dir, strategy, state.checkpoint, state.global_step,
      output.keep_checkpoints,
      optional=(ema_lib.CHECKPOINT_KEY, run_state.LOSS_SCALE_KEY))
  restored = checkpointer.restore()
  if state.averages is not None and (ema_lib.CHECKPOINT_KEY in
                                     checkpointer.missing_optional):
    logging.info("%s has no EMA: starting it from the restored weights",
                 restored)
    state.averages.reset()
  if run_state.LOSS_SCALE_KEY in checkpointer.missing_optional:
    logging.info("%s has no float16 loss scale (trained in another dtype): "
                 "starting it at its initial value", restored)
  return checkpointer, restored


def _input(config: config_lib.TrainConfig, strategy,
           data: data_plan_lib.DataPlan, plan: run_plan_lib.RunPlan,
           state: run_state.TrainState, chief: bool):
  """The run's input iterator, the tf.data service's watchdog (None
  without a service) and the run's summaries (a fresh run's start with its
  flags and its first batch's images)."""
  num_classes = state.model.num_classes
  input_watchdog, first = None, None
  if config.data.data_service:
    logging.info("training input from the tf.data service at %s (%s, job %s)",
                 config.data.data_service, config.data.data_service_mode,
                 data_plan_lib.service_job_name(config, plan.start_step))
    input_watchdog = data_plan_lib.service_watchdog(
        config, state.global_step, config.output.model_dir)
    # A first batch from a job of its own, on every start (so fresh and
    # resumed runs build the same datasets): a service without workers
    # ends the run here instead of hanging inside the first compiled call.
    probe = strategy.distribute_datasets_from_function(
        data_plan_lib.train_input_fn(config, data, plan, num_classes,
                                     job_suffix="-probe"))
    with input_watchdog.armed():
      first = strategy.experimental_local_results(next(iter(probe)))
  dataset = strategy.distribute_datasets_from_function(
      data_plan_lib.train_input_fn(config, data, plan, num_classes))
  iterator = iter(dataset)
  summaries = summaries_lib.Summaries(
      summaries_lib.logdir(config.output.model_dir), chief)
  if plan.start_step == 0:
    summaries.flags(config.flat(), config.experiment_values())
    # A second iterator over the same dataset: building another dataset
    # would trace its functions on fresh starts only, shifting TF's function
    # names and so missing the persistent XLA cache on the first resume.
    if first is None:
      with records_lib.named_read_errors(data.info, ["train"],
                                         errors.TrainError):
        first = strategy.experimental_local_results(next(iter(dataset)))
    summaries.images(first[0][0], 0)
  return iterator, input_watchdog, summaries


def build_train_step(config: config_lib.TrainConfig,
                     state: run_state.TrainState, strategy, schedule,
                     plan: run_plan_lib.RunPlan, stop_flag=None):
  """The inner loop (``step.TrainStep``) of the run's settings.

  Args:
    config: the run's configuration.
    state: model, optimizer, step counter, loss scale and EMA.
    strategy: the strategy they were built under.
    schedule: the learning-rate schedule.
    plan: the run plan (the global batch).
    stop_flag: the host variable of stop requests (``preemption``), if any.
  """
  settings = config.schedule
  return step_lib.TrainStep(
      strategy=strategy, model=state.model, optimizer=state.optimizer,
      schedule=schedule, global_step=state.global_step,
      global_batch=plan.global_batch, dtype=config.runtime.dtype,
      label_smoothing=settings.label_smoothing, jit_compile=config.jit_step,
      loss_scale=state.loss_scale,
      regularization=step_lib.Regularization(
          cutmix_prob=settings.cutmix_prob, cutmix_beta=settings.cutmix_beta,
          mixup_alpha=settings.mixup_alpha, cutout_size=settings.cutout_size,
          clip_grad_norm=settings.clip_grad_norm, seed=config.runtime.seed),
      ema=state.averages, stop_flag=stop_flag)


def _start(config: config_lib.TrainConfig, stop: preemption.StopSignals):
  """The strategy, then the process-wide TensorFlow settings.

  Returns:
    (strategy, the host variable of stop requests).
  """
  runtime = config.runtime
  strategy = distribute.create_strategy(runtime)
  stop.reclaim()
  # Outside the strategy's scope: one plain host variable per worker, read
  # by the compiled loops at every step (``step.with_stop_request``).
  stop_flag = tf.Variable(0.0, trainable=False, name="stop_requested")
  if runtime.deterministic:
    tf.config.experimental.enable_op_determinism()
  # Never global seed 0: tf.data's seed helper then compares our per-epoch
  # shuffle seed (a tensor) with 0 in Python and fails.
  tf.random.set_seed(runtime.seed + 1)
  return strategy, stop_flag


def _plan(config: config_lib.TrainConfig, data: data_plan_lib.DataPlan,
          replicas: int):
  """The run plan (from step 0) and its learning-rate schedule."""
  settings = config.schedule
  try:
    plan = run_plan_lib.RunPlan.create(
        train_examples=data.train_examples, global_batch=settings.batch_size,
        replicas=replicas, epochs=settings.epochs,
        train_steps=settings.train_steps)
    schedule = schedules.Schedule(
        settings.lr_schedule, settings.lr, plan.steps_per_epoch,
        plan.schedule_steps, settings.lr_decay_epochs,
        settings.lr_decay_factor, settings.warmup_epochs)
  except ValueError as e:
    raise errors.TrainError(str(e)) from None
  return plan, schedule


def _actions(config: config_lib.TrainConfig, plan: run_plan_lib.RunPlan,
             *, summaries, model, checkpointer, evaluate, train_log,
             epoch_log, progress, input_watchdog) -> List[loop.Action]:
  """The outer loop's actions, in the order they run after each call."""
  output = config.output
  found: List[Optional[loop.Action]] = [
      actions_lib.InputWatchdog(input_watchdog) if input_watchdog else None,
      fault_injection.FaultInjection.from_env(checkpointer),   # tests only
      actions_lib.FiniteCheck(checkpointer),
      actions_lib.TrainGraph(summaries),
      actions_lib.Profiler(output.profile_steps,
                           summaries.run_dir(summaries_lib.TRAIN)),
      train_log,
      actions_lib.Histograms(output.histogram_every_steps, summaries, model),
      evaluate,
      actions_lib.Checkpoint(output.checkpoint_every_steps or
                             plan.steps_per_epoch, checkpointer),
      actions_lib.EpochRecord(
          epoch_log, plan.steps_per_epoch,
          (lambda: evaluate.last) if evaluate else (lambda: None)),
      actions_lib.StopRequest(checkpointer),
      actions_lib.ProgressBar(progress),
  ]
  return [action for action in found if action is not None]


def _evaluation(config: config_lib.TrainConfig, strategy,
                data: data_plan_lib.DataPlan, plan: run_plan_lib.RunPlan,
                state: run_state.TrainState, summaries, chief: bool,
                stop_flag):
  """The evaluation action and the best checkpoint it keeps; (None, None)
  when the data has no evaluation split."""
  if data.eval_split is None:
    return None, None
  output = config.output
  evaluator = evaluator_lib.Evaluator(
      strategy=strategy, model=state.model, info=data.info,
      preprocessing=data.preprocessing, split=data.eval_split,
      global_batch=config.eval_batch, dtype=config.runtime.dtype,
      averages=state.averages, error_class=errors.EvaluationError,
      stop_flag=stop_flag)
  best_checkpoint = best_checkpoint_lib.BestCheckpoint(
      model_dir=output.model_dir, strategy=strategy,
      checkpoint=state.checkpoint, uses_ema=state.averages is not None)
  evaluate = actions_lib.EvalAction(
      evaluator, summaries, state.global_step, data.eval_split,
      best_checkpoint, progress=chief,
      every=int(round(output.eval_every_epochs * plan.steps_per_epoch)))
  return evaluate, best_checkpoint


def _resume(config: config_lib.TrainConfig, data: data_plan_lib.DataPlan,
            plan: run_plan_lib.RunPlan, state: run_state.TrainState,
            restored: Optional[str], fine_tuning: finetune_run.FineTuning):
  """After the restore: the fine-tuning start of a fresh run, the launch
  checked against the run's history, the plan resumed.

  Returns:
    (the resumed ``RunPlan``, the launch's ``resume.ResumePlan``, the
    launches recorded before it).
  """
  start_step = int(state.global_step.numpy())
  if restored:
    logging.info("resumed from %s at step %d%s", restored, start_step,
                 fine_tuning.resumed_text())
  else:
    fine_tuning.initialise(
        state.model, state.averages,
        data.info.class_names if data.info is not None else None)
  resume_plan, launches = plan_resume(config, data, start_step, restored)
  plan = plan.resumed(start_step, resume_plan.step_offset,
                      resume_plan.start_examples)
  return plan, resume_plan, launches


def assemble(config: config_lib.TrainConfig, stop: preemption.StopSignals,
             claims: list) -> Run:
  """Builds the run of ``config``, resumed from its newest checkpoint.

  Args:
    config: the validated run configuration.
    stop: the installed stop signals (their flag is attached to the step).
    claims: the chief's ``access.RunClaim`` of the model dir is appended
      (abandoned by the caller when the run fails before saving).

  Raises:
    TrainError: a problem of the settings or data, named.
  """
  runtime, output = config.runtime, config.output
  strategy, stop_flag = _start(config, stop)
  replicas = strategy.num_replicas_in_sync
  num_workers = distribute.num_workers(strategy)
  chief = distribute.is_chief(strategy)
  # Held until the process exits (the kernel drops it even on SIGKILL).
  claim = model_dir_lib.RunClaim(output.model_dir) if chief else None
  if claim is not None:
    claims.append(claim)
  _check_batches(config, replicas)
  fine_tuning = finetune_run.FineTuning.of(config)
  data = data_plan_lib.plan_data(config, fine_tuning)
  plan, schedule = _plan(config, data, replicas)

  state = run_state.build_state(config, data.num_classes, strategy,
                                fine_tuning)
  model, global_step = state.model, state.global_step
  stop.attach(stop_flag, step=global_step)
  checkpointer, restored = _restore(config, strategy, state)
  class_names = manifest_lib.class_names_list(data.info, model.num_classes)
  plan, resume_plan, launches = _resume(config, data, plan, state, restored,
                                        fine_tuning)
  # The counter runs to where the schedule (in steps of this batch) ends.
  schedule = dataclasses.replace(schedule, step_offset=plan.step_offset)

  def write_configs():
    model_io.write_config(output.model_dir, model,
                          model_metadata(config, data, class_names))
    config_lib.write(output.model_dir, config,
                     launches + [resume_plan.launch.to_json()])
  guard = ModelDirGuard(output.model_dir, claim, global_step, write_configs)
  if chief:
    guard.attach(checkpointer, restored)

  iterator, input_watchdog, summaries = _input(config, strategy, data, plan,
                                               state, chief)
  evaluate, best_checkpoint = _evaluation(config, strategy, data, plan,
                                          state, summaries, chief, stop_flag)
  train_step = build_train_step(config, state, strategy, schedule, plan,
                                stop_flag)
  progress = progress_lib.TrainProgress(
      run=plan, jit_compile=runtime.jit_compile)
  epoch_log = epoch_log_lib.EpochLog(
      model_dir=output.model_dir, enabled=chief, run=plan, schedule=schedule,
      progress=progress)
  train_log = actions_lib.TrainLog(
      every=output.log_every_steps, summaries=summaries, schedule=schedule,
      global_batch=plan.global_batch, num_workers=num_workers,
      progress=progress)
  controller = loop.Controller(
      train_step=train_step, iterator=iterator, total_steps=plan.total_steps,
      steps_per_loop=runtime.steps_per_loop,
      actions=_actions(config, plan, summaries=summaries, model=model,
                       checkpointer=checkpointer, evaluate=evaluate,
                       train_log=train_log, epoch_log=epoch_log,
                       progress=progress, input_watchdog=input_watchdog),
      stop_requested=lambda: num_workers == 1 and stop.requested)
  return Run(config=config, strategy=strategy, num_workers=num_workers,
             chief=chief, claim=claim, data=data, plan=plan, state=state,
             checkpointer=checkpointer, model_dir=guard, summaries=summaries,
             evaluate=evaluate, best_checkpoint=best_checkpoint,
             train_log=train_log, epoch_log=epoch_log, progress=progress,
             controller=controller,
             checkpoint_every=(output.checkpoint_every_steps or
                               plan.steps_per_epoch),
             input_watchdog=input_watchdog)
