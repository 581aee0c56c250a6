"""The training step and outer loop, optimiser, schedules, EMA, loss scale, batch mixing, checkpoints, summaries."""
