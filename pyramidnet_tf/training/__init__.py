"""Training: the run's config, the trainer, the step and outer loop, optimiser,
schedules, EMA, loss scale, batch mixing, evaluation, checkpoints, summaries."""
