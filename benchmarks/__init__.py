"""Speed benchmarks of glide-jax (see docs/PERFORMANCE.md).

The scripts run as files (`python benchmarks/sample_speed.py`); this package
only lets them share `harness` (timing, run metadata, JSON) and `roofline`
(FLOP/byte counts, matmul peak, device memory).
"""
