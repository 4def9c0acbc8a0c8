"""compact_lm.tools: pruning, quantization and latency profiling (installed from `tools/`).

The tools arrive with the compression stage; this package already installs under its final name
so that the layout and the import path are fixed from the start.
"""
