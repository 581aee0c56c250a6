"""The network: PyramidNet, its units and layers, widths, ShakeDrop, channel
alignment, cost."""
