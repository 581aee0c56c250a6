"""The trainer's own errors: a setting or the data, named in one line."""


class TrainError(ValueError):
  """A problem the user can fix; printed without a traceback."""


class EvaluationError(TrainError):
  """The evaluation split could not be read; the training state is intact
  (at a step boundary), so the run saves it before stopping."""
