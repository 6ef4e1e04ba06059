"""The latency predictor service: fit, judge against peers, version, and serve (issue 5)."""
