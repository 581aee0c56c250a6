"""Where and how the step runs: tf.distribute strategies, XLA compile units and
caches."""
