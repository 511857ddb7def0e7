"""Run a plan's steps as Ray tasks on a cluster (`--executor ray`, with `--address` or RAY_ADDRESS).

Ray does the scheduling; this module only hands it steps whose parents are finished, each as one task that
runs the same cache protocol as on this machine (converter.executor.run_elsewhere). Every node must reach the
cache folder (a shared file system). Latency rows are timed on this machine, with nothing else running, since
a row describes the machine it was timed on.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from converter.errors import DependencyError
from converter.executor import Events, LocalExecutor, Outcome, run_elsewhere
from converter.plan import Step
from converter.store import Store


def _ray():
    try:
        import ray
    except ImportError:
        raise DependencyError("--executor ray needs Ray: pip install 'convert[ray]' (make install includes it)") from None
    return ray


class RayExecutor(LocalExecutor):
    def __init__(self, store: Store, force: bool = False, events: Optional[Events] = None, keep_going: bool = True,
                 address: Optional[str] = None, cpus_per_step: float = 1.0):
        super().__init__(store, force, events, keep_going, jobs=1_000_000)  # Ray decides how many run at once
        ray = _ray()
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"CONVERT_CACHE_DIR": str(store.root)}})
        self._task = ray.remote(num_cpus=cpus_per_step, max_retries=0)(run_elsewhere)

    def _submit(self, step: Step, recompute: bool) -> Any:
        if step.kind in self.exclusive_kinds:
            return super()._submit(step, recompute)  # timed here, alone
        return self._task.remote(step.to_json(), str(self.store.root), recompute, self.keep_going)

    def _collect(self, running: dict[Any, Step]) -> list[tuple[Any, Outcome]]:
        local = [h for h in running if not _is_ref(h)]
        if local:
            return super()._collect({h: running[h] for h in local})
        ray = _ray()
        finished, _ = ray.wait(list(running), num_returns=1)
        return [(ref, self._outcome(running[ref], ray.get(ref))) for ref in finished]

    def _shutdown(self) -> None:
        super()._shutdown()


def _is_ref(handle: Any) -> bool:
    return type(handle).__name__ == "ObjectRef"
