"""Runs of a sweep as Ray tasks, on an existing cluster (``address``) or on a Ray instance started here.

Each run is one task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (by default one GPU when
the cluster has any, else none). Ray sets ``CUDA_VISIBLE_DEVICES`` for the task, so the trainer's
``device=auto`` picks the GPU it was given, and ``OMP_NUM_THREADS`` to its CPUs. A task's worker process
serves that task only (``max_calls=1``): the next run gets a fresh process, with none of the previous
run's memory. Ray itself retries nothing (``max_retries=0``); the driver does, as a resume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TextIO, cast

from diffworld.cluster.plan import RunSpec, SweepError
from diffworld.cluster.sweep import RunCrashed
from diffworld.cluster.task import train_run
from diffworld.errors import UserError

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
"""The local instance's object store: tasks return small dicts, so RAM stays with training."""


class RayExecutor:
    def __init__(
        self,
        stream: TextIO,
        *,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float | None = None,
        local_cpus: int | None = None,
    ) -> None:
        """Connect to the cluster at ``address`` (``auto``, ``host:6379``, ``ray://host:10001``), or start
        a local instance with ``local_cpus`` CPUs (default: all) when ``address`` is None."""
        try:
            import ray
        except ImportError:
            raise SweepError(
                "Ray is not installed: pip install 'diffworld[cluster]' (or pip install 'ray[client]')."
            ) from None
        if address is None:
            ray.init(
                address="local",  # never attach to a cluster found by chance (RAY_ADDRESS, an earlier one)
                num_cpus=local_cpus,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        else:
            if local_cpus is not None:
                raise SweepError("--num-cpus sizes the local Ray instance; it has no meaning with --address.")
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except ConnectionError as e:
                raise SweepError(
                    f"Cannot connect to the Ray cluster at {address!r} ({e}). Start it with "
                    "'ray start --head' on the head node, then pass --address auto on a node of the "
                    "cluster, or --address ray://<head>:10001 from elsewhere."
                ) from None
        self._ray = ray
        total = ray.cluster_resources()
        gpus = (1 if total.get("GPU", 0) >= 1 else 0) if gpus_per_run is None else gpus_per_run
        self.description = (
            f"Ray {'cluster ' + address if address else 'instance started here'}: "
            f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs; "
            f"each run asks for {cpus_per_run:g} CPU(s) and {gpus:g} GPU(s)."
        )
        print(self.description, file=stream, flush=True)
        if not any(
            node["Alive"]
            and node["Resources"].get("CPU", 0) >= cpus_per_run
            and node["Resources"].get("GPU", 0) >= gpus
            for node in ray.nodes()
        ):
            print(
                f"Warning: no node of the cluster has {cpus_per_run:g} CPU(s) and {gpus:g} GPU(s); "
                "the runs wait until one joins it (or change --cpus-per-run / --gpus-per-run).",
                file=stream,
                flush=True,
            )
        self._task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus, max_calls=1, max_retries=0)(train_run)

    def submit(self, run: RunSpec, logs_dir: Path, token: str) -> object:
        return self._task.remote(run, logs_dir, token)

    def wait(self, handles: list[object], timeout: float) -> list[object]:
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        return list(ready)

    def result(self, handle: object) -> None:
        exceptions = self._ray.exceptions
        try:
            self._ray.get(cast(Any, handle))
        except exceptions.RayTaskError as e:
            cause: Any = getattr(e, "cause", None) or e
            raise RunCrashed(
                f"{type(cause).__name__}: {cause}", retryable=not isinstance(cause, UserError)
            ) from None
        except exceptions.RayError as e:  # the worker or its node died, the task's result was lost
            raise RunCrashed(f"{type(e).__name__}: {e}", retryable=True) from None

    def close(self) -> None:
        self._ray.shutdown()
