"""``styleid-edge bench``: per-stage latency of the runtime and the original StyleID math as the baseline."""
