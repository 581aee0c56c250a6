"""One training run from a ``TrainConfig``: built, run, reported.

``assemble`` builds the run (strategy, data and run plans, model, optimizer
and checkpoint under the strategy, resume, input, the inner step and the
outer loop's actions); ``train`` runs it: the plan line, the outer loop
(``loop.Controller``), the final checkpoint and evaluation, the epoch
record of the last epoch, the closing summary and the result.

Works on one CPU/GPU, several GPUs (mirrored) and several hosts (TF_CONFIG +
distribution multi_worker or auto). Rerunning with the same model dir
resumes from its newest intact checkpoint. Nothing here reads command-line
flags; error messages name settings by their flag names, which are the
config's field names.
"""

import hashlib
import json
from typing import Any, Dict, Optional

from absl import logging

from pyramidnet_tf import recipe_book as paper_rows
from pyramidnet_tf.data import records as records_lib
from pyramidnet_tf.model import complexity
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.runtime import compile_cache
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.training import assemble as assemble_lib
from pyramidnet_tf.training import checkpoint_checks
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import epoch_log as epoch_log_lib
from pyramidnet_tf.training import errors
from pyramidnet_tf.training import evaluator as evaluator_lib
from pyramidnet_tf.training import loop
from pyramidnet_tf.training import preemption
from pyramidnet_tf.training import progress as progress_lib
from pyramidnet_tf.training import run_plan as run_plan_lib

# The errors ``train`` raises for problems of the settings or data.
TrainError = errors.TrainError
EvaluationError = errors.EvaluationError


def _state_after_failed_eval(checkpointer, num_workers: int) -> str:
  """Saves the run's state after an evaluation that could not read its
  split (one worker: the others of a cluster may be inside the evaluation,
  where a save would wait for them); says where the state is."""
  step = int(checkpointer.global_step.numpy())
  latest = checkpointer.latest()
  if latest is not None and model_io.step_of(latest) == step:
    return f"the run's state at step {step} is in {latest}"
  if num_workers == 1:
    return (f"saved the run's state at step {step} in {checkpointer.save()} "
            "first, so that is where it resumes")
  return checkpoint_checks.last_good_text(checkpointer.model_dir)


def weights_fingerprint(model) -> str:
  """SHA-256 of the trainable weights: equal on workers that agree."""
  digest = hashlib.sha256()
  for variable in model.trainable_variables:
    digest.update(variable.numpy().tobytes())
  return digest.hexdigest()


def _count(n: int) -> str:
  """1.73M, 253.1G, 22.5k: a count with three significant digits."""
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if n >= scale:
      return f"{n / scale:.3g}{suffix}"
  return str(n)


def published_error(model, data) -> Optional[str]:
  """The paper's error for this network on this data (one of its rows:
  the same architecture, trained on the dataset the row is for), else
  None."""
  row = paper_rows.find(model.arch)
  if row is None or data.kind != row.dataset:
    return None
  return row.published


def _devices_text(strategy) -> str:
  """``2 x GPU`` style summary of the local worker's replica devices."""
  counts: Dict[str, int] = {}
  for device in strategy.extended.worker_devices:
    kind = device.rsplit("device:", 1)[-1].split(":")[0] or device
    counts[kind] = counts.get(kind, 0) + 1
  return ", ".join(f"{n} x {kind}" for kind, n in counts.items())


def plan_line(config: config_lib.TrainConfig, model, strategy, *,
              num_workers: int, run: run_plan_lib.RunPlan) -> str:
  """The run's start line: network, length, batch, devices, precision.

  Args:
    config: the run's configuration.
    model: the built PyramidNet.
    strategy: the strategy it trains under.
    num_workers: hosts taking part.
    run: the run plan (length, start, batches, re-base).
  """
  arch = model.arch
  units = "bottleneck" if arch.bottleneck else "basic"
  size = config.data.image_size or (224 if arch.dataset == "imagenet" else 32)
  parts = complexity.report(arch, model.num_classes, size)
  replicas = run.replicas
  runtime = config.runtime
  resumed = f", resuming at step {run.start_step}" if run.start_step else ""
  if run.step_offset:
    resumed += (f" (schedule step {run.schedule_step(run.start_step)}: "
                "steps re-based on examples seen)")
  xla = f"on ({runtime.jit_scope})" if runtime.jit_compile else "off"
  return (
      f"training {config.model_dataset} PyramidNet-{arch.depth} "
      f"({arch.mode} alpha={arch.alpha:g}, {units} units, "
      f"{model.num_classes} classes, "
      f"{_count(complexity.total_params(parts))} parameters, "
      f"{_count(complexity.total_macs(parts))} MACs at {size} px): "
      f"{run.total_steps} steps = "
      f"{progress_lib.epochs_text(run.epochs)} epochs of "
      f"{run.steps_per_epoch} steps{resumed}; global batch "
      f"{run.global_batch} = {replicas} "
      f"replica{'s' if replicas > 1 else ''} x {run.per_replica_batch} on "
      f"{num_workers} worker{'s' if num_workers > 1 else ''} "
      f"({_devices_text(strategy)} each); {runtime.dtype}, XLA {xla}, "
      f"channel multiple {model.channel_multiple}")


def train(config: config_lib.TrainConfig, *,
          stop: Optional[preemption.StopSignals] = None) -> Dict[str, Any]:
  """Runs training; returns a result dict (also logged as JSON).

  A stop request (SIGTERM, SIGINT, SIGUSR1) ends training after the step in
  progress on every worker, with a checkpoint of that step; the result then
  has ``preempted`` (and ``signal``), and the tool exits with
  ``exit_codes.PREEMPTED``.

  Args:
    config: the validated run configuration (``cli.train_config``).
    stop: stop signals already installed by the caller (as early as
      possible); None installs them here, for the run's duration.

  Raises:
    TrainError: a problem of the settings or data, named.
    checkpointing.CheckpointError, loop.NonFiniteLossError,
    model_dir.ModelDirError: see those modules.
  """
  own_stop = stop is None
  if own_stop:
    stop = preemption.StopSignals()
    stop.install()
  claims = []
  try:
    return _run(assemble_lib.assemble(config, stop, claims), stop)
  except BaseException:
    # Refused or failed before it saved anything: leave no empty model dir
    # or stray lock behind.
    for claim in claims:
      claim.abandon()
    raise
  finally:
    if own_stop:
      stop.uninstall()



def _train_loop(run: assemble_lib.Run) -> None:
  """The outer loop to the run's end (or a stop request)."""
  runtime, output = run.config.runtime, run.config.output
  logging.info("%s", plan_line(run.config, run.state.model, run.strategy,
                               num_workers=run.num_workers, run=run.plan))
  if run.num_workers > 1:
    logging.info("%s", distribute.cluster_text(run.strategy))
  if compile_cache.resolve_cache_dir(runtime.compile_cache_dir,
                                     output.model_dir, runtime.jit_compile):
    compile_cache.align_function_names()
  try:
    with records_lib.named_read_errors(run.data.info, ["train"], TrainError):
      run.controller.run()
  except EvaluationError as e:
    raise TrainError(
        f"{e}; {_state_after_failed_eval(run.checkpointer, run.num_workers)}"
    ) from None
  finally:
    if run.input_watchdog is not None:
      run.input_watchdog.close()


def _finish(run: assemble_lib.Run, final_step: int):
  """After the loop: the final checkpoint and evaluation, and the record
  of the last epoch.

  Returns:
    (the final evaluation's metrics or None, whether a stop request ended
    the run).
  """
  plan, model_dir = run.plan, run.config.output.model_dir
  preempted = run.controller.preempted
  eval_metrics = run.evaluate.last if run.evaluate else None
  if plan.finished_before:
    # A rerun of a finished run: its final evaluation is on record.
    eval_metrics = epoch_log_lib.final_eval(model_dir, final_step)
    if eval_metrics is not None and run.data.eval_split:
      eval_metrics["split"] = run.data.eval_split
    will_evaluate = (eval_metrics is None and run.config.output.eval_at_end
                     and run.evaluate is not None)
    logging.info(
        "already finished at step %d/%d%s", final_step, plan.total_steps,
        ": evaluating it (no final evaluation on record)" if will_evaluate
        else ("; its final evaluation is on record in metrics.csv"
              if eval_metrics is not None else ": nothing to do"))
  if not preempted:
    if final_step > plan.start_step and not loop.hit(final_step,
                                                     run.checkpoint_every):
      run.checkpointer.save()
    if (run.evaluate is not None and run.config.output.eval_at_end and
        (eval_metrics is None or eval_metrics["step"] != final_step)):
      try:
        eval_metrics = run.evaluate()
      except evaluator_lib.EvaluationStopped:
        logging.info("final evaluation abandoned: stop requested (the "
                     "checkpoint of step %d is saved)", final_step)
        preempted = True
      except EvaluationError as e:
        state = _state_after_failed_eval(run.checkpointer, run.num_workers)
        raise TrainError(f"{e}; {state}") from None
  if not preempted and (final_step > plan.start_step or (
      plan.finished_before and eval_metrics is not None and
      epoch_log_lib.final_eval(model_dir, final_step) is None)):
    run.epoch_log.write(final_step, eval_metrics)
  return eval_metrics, preempted


def _run(run: assemble_lib.Run, stop: preemption.StopSignals
         ) -> Dict[str, Any]:
  """Runs an assembled run; returns its result."""
  _train_loop(run)
  final_step = int(run.state.global_step.numpy())
  eval_metrics, preempted = _finish(run, final_step)
  chief, checkpointer = run.chief, run.checkpointer
  if preempted:
    result = {"preempted": True, "signal": stop.signal_name,
              "step": final_step, "total_steps": run.plan.total_steps,
              "checkpoint": checkpointer.latest() if chief else None}
  else:
    result = {"step": final_step, "train": run.train_log.metrics,
              "eval": eval_metrics}
  run.summaries.flush()
  if chief:
    # Never "done" for a directory that lost its configs or went away.
    run.model_dir.check_ownership()
    run.model_dir.restore_configs()
  if run.claim is not None:
    run.claim.release()
  result["weights_fingerprint"] = weights_fingerprint(run.state.model)
  if chief and not preempted:
    run.progress.summary(
        final_step=final_step, last_eval=result["eval"],
        best_eval=run.evaluate.best if run.evaluate else None,
        checkpoint=checkpointer.latest(),
        model_dir=run.config.output.model_dir,
        best_checkpoint=(run.best_checkpoint.prefix if run.best_checkpoint
                         else None),
        published=published_error(run.state.model, run.data),
        images_per_sec=run.epoch_log.images_per_sec)
  logging.info("result: %s", json.dumps(result))
  if run.num_workers > 1:
    # Who this is, so the tool can end the workers in order
    # (``distribute.leave_cluster``).
    result["worker"] = distribute.task(run.strategy)[1]
    result["workers"] = run.num_workers
  return result
