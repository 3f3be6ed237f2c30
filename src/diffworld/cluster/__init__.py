"""Sweeps: one training run per (game, seed), on a Ray cluster or a local Ray instance, resumed on failure.

``plan`` decides the runs and reads their state from disk, ``task`` trains one run in a worker,
``sweep`` drives them (retries, live table, final report), ``ray_backend`` puts them on Ray. Only
``ray_backend`` imports Ray.
"""
