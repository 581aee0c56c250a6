"""Runs one group of the code-path matrix in this process, case by case.

    python -m tests.path_matrix_worker '<group json>' [case to skip ...]

A group is one network kind: unit type, stem, widening mode, and optionally
ShakeDrop (a level) or sync BN (MirroredStrategy over two logical CPUs). For
every channel multiple (1, 8, 16) and compute dtype (float32, bfloat16) it
runs the four ways a user reaches the network:

* ``infer_eager``: ``model(images, training=False)``;
* ``infer_graph``: the evaluator's ``step.EvalStep.loop`` (a tf.function);
* ``train_eager``: a GradientTape forward/backward with ``training=True``;
* ``train_graph``: one step of the trainer's ``step.TrainStep.loop``.

Every case starts from the same weights and BN statistics (random, so that
inference exercises non-trivial statistics) and its results are compared
with the case at channel multiple 1 of the same dtype (and, for bfloat16,
loosely with float32). Sync-BN groups are compared with the one-device run of
the same global batch, which they must equal.

The caller runs a group with "onednn_isa" (an instruction set) under
TF_ENABLE_ONEDNN_OPTS=1 and ONEDNN_MAX_CPU_ISA; the name says so.

Test hooks of the caller's own tests: "cases" (a list) runs only those
cases, "abort_in" (a case name) aborts the process when that case starts.

Each case prints ``CASE <name> START`` before it runs and ``CASE <name> OK``
or ``CASE <name> FAIL <reason>`` after, flushed, so that a caller sees which
case a process abort (a C++ CHECK failure, a segfault) happened in;
``tests/model/test_path_matrix.py`` runs this module in subprocesses for that
reason.
"""

import json
import os
import sys
import traceback

import numpy as np

MULTIPLES = (1, 8, 16)
DTYPES = ("float32", "bfloat16")
KINDS = ("infer_eager", "infer_graph", "train_eager", "train_graph")
BATCH = 4

# The smallest network of each kind: one unit per stage.
SMALLEST = {
    ("cifar", "basic"): dict(dataset="cifar10", depth=8),
    ("cifar", "bottleneck"): dict(dataset="cifar10", depth=11),
    ("imagenet", "basic"): dict(dataset="imagenet", depth=10),
    ("imagenet", "bottleneck"): dict(dataset="imagenet", depth=14),
}
# Widening that makes consecutive widths differ and not align by themselves.
ALPHA = {"add": 12.0, "mul": 2.0}
IMAGE_SIZE = {"cifar": 16, "imagenet": 64}

# Largest relative difference (max |a - b| / max |b|, see ``_worst``) a
# float32 case may show against its reference: the same sums in another
# order. Sync BN computes its moments from sums and sums of squares, the
# one-device reference with the fused kernel: another formula too.
TOLERANCE = {False: 2e-4, True: 2e-3}  # keyed by sync BN
# bfloat16 cases are compared with float32 at multiple 1: every activation
# keeps 8 bits of mantissa, and a training-mode BN over a few values per
# channel (batch 4, small images) amplifies that in the backward pass, so
# gradients are compared as one vector (cosine similarity; 0.96-0.99 seen)
# and everything else to 10 % of its family's largest value.
BF16_TOLERANCE = 0.1
BF16_MIN_GRADIENT_COSINE = 0.9
# A ReLU's derivative jumps at 0, so a gradient is only comparable between
# two float32 evaluations when no ReLU input lies within their rounding
# difference of 0: there, one summation order (the padded network's, or
# another CPU's oneDNN kernel) may put the input just above 0 and another
# just below, and that element's whole upstream gradient is then counted in
# one result and not in the other (a few percent of a BN offset's gradient,
# and everything upstream of it). A random batch has ~10^5 to 10^6 ReLU
# inputs of unit scale, so some input within 10^-6 of 0 is likely; one at
# 6e-8 is what made an AVX2 CPU flip layer2_0/bn2's channel 65 of
# imagenet-basic-mul where SSE4.1 and the padded networks did not. The
# float32 training cases therefore give every ReLU input within KINK_BAND
# (relative to the RMS of that ReLU's reference input) of 0 the side it has
# in the reference forward pass (``ReluSigns``); everywhere else the ReLU is
# TensorFlow's own. KINK_BAND bounds the rounding of a sum of ~10^3 float32
# terms (3x3x128 per output of the widest convolution here: 1152 x 6e-8);
# the largest difference measured between the padded and unpadded networks'
# ReLU inputs is 7e-6 of that RMS. A defect that moves an input by more
# still flips its ReLU and shows in the comparison.
KINK_BAND = 1e-4


def case_names(group: dict):
  """The group's cases, references first (or the group's own "cases")."""
  if "cases" in group:
    return list(group["cases"])
  return [f"{kind}/m{multiple}/{dtype}" for multiple in MULTIPLES
          for dtype in DTYPES for kind in KINDS]


def group_name(group: dict) -> str:
  name = f"{group['stem']}-{group['unit']}-{group['mode']}"
  if group.get("shakedrop"):
    name += f"-shakedrop_{group['shakedrop']}"
  if group.get("sync_bn"):
    name += "-sync_bn"
  if group.get("onednn_isa"):
    name += "-onednn_" + group["onednn_isa"].lower()
  return name


def _rel(got, want, floor: float = 1e-6) -> float:
  """max |got - want| / max(max |want|, floor)."""
  got = np.asarray(got, np.float64)
  want = np.asarray(want, np.float64)
  if got.shape != want.shape:
    return float("inf")
  if not want.size:
    return 0.0
  scale = max(float(np.abs(want).max()), floor)
  return float(np.abs(got - want).max() / scale)


def _family(key: str) -> str:
  return key.split(":", 1)[0] if ":" in key else key


def _worst(got: dict, want: dict, fraction: float):
  """(largest relative difference, the entry it is in).

  Each entry is measured against its own magnitude, floored at ``fraction``
  of the largest magnitude of its family (all gradients, all BN statistics,
  all variables): the gradients of a beta followed by a training-mode BN are
  zero up to rounding, so their own magnitude means nothing.
  """
  largest = {}
  for key, value in want.items():
    family = _family(key)
    size = float(np.abs(np.asarray(value, np.float64)).max()) if np.size(
        value) else 0.0
    largest[family] = max(largest.get(family, 0.0), size)
  worst = (0.0, "")
  for key in want:
    if key not in got:
      return float("inf"), f"{key} missing"
    floor = max(fraction * largest[_family(key)], 1e-6)
    worst = max(worst, (_rel(got[key], want[key], floor), key))
  return worst


def _gradient_cosine(got: dict, want: dict) -> float:
  keys = sorted(k for k in want if k.startswith("grad:"))
  a = np.concatenate([np.ravel(got[k]) for k in keys]).astype(np.float64)
  b = np.concatenate([np.ravel(want[k]) for k in keys]).astype(np.float64)
  return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _compare(got: dict, want: dict, dtype: str, sync_bn: bool):
  """None if ``got`` reproduces ``want`` at ``dtype``'s precision."""
  if dtype == "float32":
    worst, where = _worst(got, want, 1e-2)
    if worst > TOLERANCE[sync_bn]:
      return (f"{where} differs from the reference by {worst:.3g} "
              f"(relative; allowed {TOLERANCE[sync_bn]})")
    return None
  values = {k: v for k, v in want.items() if not k.startswith("grad:")}
  worst, where = _worst(got, values, 1.0)
  if worst > BF16_TOLERANCE:
    return (f"{where} differs from float32 by {worst:.3g} (relative to its "
            f"family's largest value; allowed {BF16_TOLERANCE})")
  if len(values) < len(want):
    cosine = _gradient_cosine(got, want)
    if cosine < BF16_MIN_GRADIENT_COSINE:
      return (f"the gradient's cosine similarity with float32's is "
              f"{cosine:.3f} (at least {BF16_MIN_GRADIENT_COSINE} expected)")
  return None


class ReluSigns:
  """``tf.nn.relu`` that keeps the reference's side of 0 within KINK_BAND.

  Built from the ReLU inputs of one eager forward pass of the reference
  (same weights, batch and ShakeDrop seed), in call order. ``pinned()``
  patches ``tf.nn.relu`` for a case: its n-th call (modulo the number of
  ReLUs, so that retracing starts again) returns TensorFlow's ReLU of ``x``
  except where ``|x|`` is within the band of 0, where it passes ``x`` if the
  reference's input was positive and 0 otherwise (gradient likewise).
  Channels beyond the reference's (zero padding) keep TensorFlow's ReLU.
  Under sync BN each replica's share of the batch takes its rows of the
  reference's (the batch is split in order).
  """

  def __init__(self, tf, reference_inputs):
    self.tf = tf
    self.signs = [(x > 0, KINK_BAND * float(np.sqrt(np.mean(
        np.square(x, dtype=np.float64))))) for x in reference_inputs]

  @staticmethod
  def record(tf, forward):
    """The inputs of every ``tf.nn.relu`` call of ``forward()``, eagerly."""
    inputs, relu = [], tf.nn.relu

    def recording(x, name=None):
      inputs.append(x.numpy())
      return relu(x, name)

    tf.nn.relu = recording
    try:
      forward()
    finally:
      tf.nn.relu = relu
    return inputs

  def _relu(self, relu, calls):
    tf = self.tf

    def pinned(x, name=None):
      # Replicas of a MirroredStrategy interleave their calls: one count each.
      replica = tf.get_static_value(
          tf.distribute.get_replica_context().replica_id_in_sync_group)
      replica = int(replica or 0)
      count = calls.setdefault(replica, 0)
      calls[replica] = count + 1
      positive, band = self.signs[count % len(self.signs)]
      out = relu(x, name)
      channels = positive.shape[-1]
      if (x.shape[-1] < channels or x.shape[1:-1] != positive.shape[1:-1]
          or x.shape[0] is None):
        raise AssertionError(
            f"ReLU input of shape {x.shape} does not extend the reference's "
            f"{positive.shape}")
      rows = x.shape[0]
      positive = positive[replica * rows:(replica + 1) * rows]
      positive = tf.constant(positive)
      real = x[..., :channels]
      kept = tf.where(positive, real, tf.zeros_like(real))
      real = tf.where(tf.abs(real) <= tf.cast(band, real.dtype), kept,
                      out[..., :channels])
      return tf.concat([real, out[..., channels:]], -1)

    return pinned

  def pinned(self):
    """Context manager: ``tf.nn.relu`` pinned while it is open."""
    import contextlib  # pylint: disable=g-import-not-at-top
    tf = self.tf

    @contextlib.contextmanager
    def patch():
      relu = tf.nn.relu
      tf.nn.relu = self._relu(relu, {})
      try:
        yield
      finally:
        tf.nn.relu = relu

    return patch()


class Runner:
  """Builds the group's network once and runs its cases."""

  def __init__(self, group: dict):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from pyramidnet_tf.model import network as model_lib  # pylint: disable=g-import-not-at-top
    self.tf = tf
    self.group = group
    self.sync_bn = bool(group.get("sync_bn"))
    cpus = tf.config.list_physical_devices("CPU")
    if self.sync_bn:
      tf.config.set_logical_device_configuration(
          cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    kwargs = dict(SMALLEST[group["stem"], group["unit"]],
                  alpha=ALPHA[group["mode"]],
                  bottleneck=group["unit"] == "bottleneck",
                  mode=group["mode"])
    if group.get("shakedrop"):
      kwargs.update(shakedrop=True, shakedrop_pl=0.3,
                    shakedrop_level=group["shakedrop"])
    tf.random.set_seed(7)
    if self.sync_bn:
      # Under test: sync BN over two replicas. Reference: the same weights on
      # one device with the whole batch, which sync BN must equal.
      self.strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
      with self.strategy.scope():
        self.model = model_lib.PyramidNet(**kwargs)
      self.model.set_sync_batch_norm(True)
      with one_device.scope():
        self.reference_model = model_lib.PyramidNet(**kwargs)
      self.reference_strategy = one_device
    else:
      # Reference: the same model at channel multiple 1.
      self.strategy = self.reference_strategy = one_device
      with one_device.scope():
        self.model = self.reference_model = model_lib.PyramidNet(**kwargs)
    rng = np.random.default_rng(3)
    for bn in self.model.batch_norms():
      c = bn.channels
      bn.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
      bn.beta.assign(rng.normal(0, 0.2, c).astype(np.float32))
      bn.moving_mean.assign(rng.normal(0, 0.2, c).astype(np.float32))
      bn.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
    self.names = [v.name for v in self.model.variables]
    self.initial = [v.numpy() for v in self.model.variables]
    size = IMAGE_SIZE[group["stem"]]
    self.images = rng.normal(0, 1, (BATCH, size, size, 3)).astype(np.float32)
    self.labels = rng.integers(0, self.model.num_classes,
                               BATCH).astype(np.int32)
    self.references = {}
    self.seed = tf.constant([5, 9], tf.int32)  # the tape's ShakeDrop seed
    self._signs = None

  def _variables(self, model) -> dict:
    return {"var:" + name: v.numpy()
            for name, v in zip(self.names, model.variables)}

  def _dataset(self, strategy):
    tf = self.tf
    data = tf.data.Dataset.from_tensors(
        (tf.constant(self.images), tf.constant(self.labels))).repeat()
    return iter(strategy.experimental_distribute_dataset(data))

  def _relu_signs(self) -> ReluSigns:
    """The reference's ReLU signs (see KINK_BAND), computed once."""
    if self._signs is None:
      tf = self.tf
      model = self.reference_model
      model.set_channel_multiple(1)
      for variable, value in zip(model.variables, self.initial):
        variable.assign(value)
      self._signs = ReluSigns(tf, ReluSigns.record(tf, lambda: model(
          tf.constant(self.images), training=True, seed=self.seed)))
    return self._signs

  def _run(self, kind, dtype, model, strategy, multiple) -> dict:
    """One case's results, from the initial weights and statistics."""
    pin = (kind.startswith("train") and dtype == "float32" and not (
        kind == "train_graph" and self.group.get("shakedrop")))
    if pin:  # the trainer's ShakeDrop draws are not the tape's
      with self._relu_signs().pinned():
        return self._run_unpinned(kind, dtype, model, strategy, multiple)
    return self._run_unpinned(kind, dtype, model, strategy, multiple)

  def _run_unpinned(self, kind, dtype, model, strategy, multiple) -> dict:
    model.set_channel_multiple(multiple)
    for variable, value in zip(model.variables, self.initial):
      variable.assign(value)
    if kind == "infer_eager":
      return self._infer_eager(model, dtype)
    if kind == "infer_graph":
      return self._infer_graph(model, strategy, dtype)
    if kind == "train_eager":
      return self._train_eager(model, strategy, dtype)
    return self._train_graph(model, strategy, dtype)

  def _infer_eager(self, model, dtype):
    tf = self.tf
    logits = model(tf.cast(self.images, dtype), training=False)
    return {"logits": logits.numpy()}

  def _infer_graph(self, model, strategy, dtype):
    """The evaluator's loop; its loss sum is compared with the eager
    logits' (``_loss_sum``)."""
    from pyramidnet_tf.training import step as step_lib  # pylint: disable=g-import-not-at-top
    evaluator = step_lib.EvalStep(strategy=strategy, model=model, dtype=dtype)
    totals = evaluator.loop(self._dataset(strategy),
                            self.tf.constant(1))[0].numpy()
    return {"loss_sum": totals[:1], "examples": totals[3:]}

  def _train_eager(self, model, strategy, dtype):
    tf = self.tf
    from pyramidnet_tf.training import step as step_lib  # pylint: disable=g-import-not-at-top
    seed = self.seed

    def forward_backward(images, labels):
      with tf.GradientTape() as tape:
        logits = model(tf.cast(images, dtype), training=True, seed=seed)
        loss = tf.reduce_sum(step_lib.cross_entropy(
            logits, labels, model.num_classes)) / BATCH
      return loss, tape.gradient(loss, model.trainable_variables)

    if strategy.num_replicas_in_sync == 1:
      loss, grads = forward_backward(self.images, self.labels)
    else:
      per_replica = strategy.run(forward_backward,
                                 args=next(self._dataset(strategy)))
      loss = strategy.reduce("SUM", per_replica[0], axis=None)
      grads = [strategy.reduce("SUM", g, axis=None) for g in per_replica[1]]
    result = {"loss": np.float32(loss.numpy())}
    for variable, grad in zip(model.trainable_variables, grads):
      result["grad:" + variable.name] = tf.cast(grad, tf.float32).numpy()
    for bn in model.batch_norms():
      result["stat:" + bn.moving_mean.name] = bn.moving_mean.numpy()
      result["stat:" + bn.moving_variance.name] = bn.moving_variance.numpy()
    return result

  def _train_graph(self, model, strategy, dtype):
    tf = self.tf
    from pyramidnet_tf.training import optim  # pylint: disable=g-import-not-at-top
    from pyramidnet_tf.training import schedules  # pylint: disable=g-import-not-at-top
    from pyramidnet_tf.training import step as step_lib  # pylint: disable=g-import-not-at-top
    with strategy.scope():
      global_step = tf.Variable(0, dtype=tf.int64, trainable=False)
      optimizer = optim.NesterovSGD(model.trainable_variables, 0.9, True,
                                    1e-4)
    schedule = schedules.Schedule("step", 0.1, 10, 100, ())
    train_step = step_lib.TrainStep(
        strategy=strategy, model=model, optimizer=optimizer,
        schedule=schedule, global_step=global_step, global_batch=BATCH,
        dtype=dtype,
        regularization=step_lib.Regularization(seed=11))
    totals, bad_step, _ = train_step.loop(self._dataset(strategy),
                                          tf.constant(1))
    result = self._variables(model)
    result["loss_sum"] = totals.numpy()[:1]
    result["bad_step"] = np.array([bad_step.numpy()], np.float64)
    return result

  def _loss_sum(self, logits) -> dict:
    """What EvalStep sums, computed from logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(BATCH), self.labels].sum()
    return {"loss_sum": np.array([loss], np.float32),
            "examples": np.array([BATCH], np.float32)}

  def _reference(self, kind: str, dtype: str) -> dict:
    """The results a case must reproduce (see the module docstring)."""
    key = (kind, dtype)
    if key not in self.references:
      if kind == "infer_graph":
        want = self._loss_sum(self._reference("infer_eager", dtype)["logits"])
      else:
        want = self._run(kind, dtype, self.reference_model,
                         self.reference_strategy, 1)
      self.references[key] = want
    return self.references[key]

  def run_case(self, name: str):
    """None if the case passed, else why it failed."""
    kind, multiple, dtype = name.split("/")
    multiple = int(multiple[1:])
    got = self._run(kind, dtype, self.model, self.strategy, multiple)
    for key, value in got.items():
      if not np.all(np.isfinite(value)):
        return f"{key} is not finite"
    if kind == "train_graph" and got["bad_step"][0] != -1:
      return "the train step reported a non-finite loss"
    if (multiple, dtype) == (1, "float32") and not self.sync_bn:
      # The unpadded float32 network is the reference of the others (its
      # parity with the authors' PyTorch is tests/convert/test_pytorch.py's).
      self.references.setdefault((kind, dtype), got)
    if kind == "train_graph" and not self.group.get("shakedrop"):
      # Same weights, batch and loss as the tape (ShakeDrop draws differ:
      # the trainer derives its seeds from the step).
      failure = _compare({"loss": got["loss_sum"][0] / BATCH},
                         {"loss": self._reference("train_eager",
                                                  dtype)["loss"]},
                         dtype, self.sync_bn)
      if failure:
        return "the trainer's loss against the tape's: " + failure
    # bfloat16 against float32 (see BF16_TOLERANCE).
    return _compare(got, self._reference(kind, "float32"), dtype,
                    self.sync_bn)


def main(argv):
  group = json.loads(argv[1])
  skip = set(argv[2:])
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import pyramidnet_tf  # pylint: disable=g-import-not-at-top,unused-import  (TF without Keras) # noqa: F401
  runner = Runner(group)
  for name in case_names(group):
    if name in skip:
      continue
    print(f"CASE {name} START", flush=True)
    if name == group.get("abort_in"):  # the caller's own test
      os.abort()
    try:
      failure = runner.run_case(name)
    except Exception:  # pylint: disable=broad-except
      failure = traceback.format_exc().strip().splitlines()[-1]
    if failure is None:
      print(f"CASE {name} OK", flush=True)
    else:
      print(f"CASE {name} FAIL {failure}", flush=True)
  print("DONE", flush=True)


if __name__ == "__main__":
  main(sys.argv)
