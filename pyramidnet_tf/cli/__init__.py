"""The command-line layer: absl flag definitions and how CLIs report bad input
and failures."""
