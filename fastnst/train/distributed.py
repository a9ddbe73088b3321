"""Running the training loop in one process or in many: the process group, agreeing across ranks, signals.

Started by ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) the loop joins a
process group (gloo on CPU, NCCL on CUDA, one GPU per ``LOCAL_RANK``); otherwise
every function here is a cheap no-op, so the loop has one code path.

Every rank must take the same decisions at the same step (stop, give up on a
non-finite loss) or a collective would hang: ``sum_over_ranks`` is how they agree.
"""

from __future__ import annotations

import logging
import signal
import threading

import torch
import torch.distributed as dist

from fastnst.device import resolve_device, torchrun_rank

log = logging.getLogger(__name__)


def start(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins the process group under torchrun."""
    device = resolve_device(device_name)
    _, world, local = torchrun_rank()
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(values: torch.Tensor, world: int) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks (in place); ``values`` itself with one process."""
    if world > 1:
        dist.all_reduce(values)
    return values


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


class StopRequests:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps; a second signal stops at once.

    Used as a context manager, which installs the handlers (main thread only)
    and puts the previous ones back.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "another rank's signal"

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received %s: finishing this step, saving a checkpoint, then stopping (again to stop at once)",
                    signal.Signals(signum).name)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
