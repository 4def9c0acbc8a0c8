"""compact_lm.tools: pruning, quantization, the size/quality sweep, latency profiling and the demo
(installed from the top-level `tools/` folder)."""
