"""An orderly end for the default process group of a multi-process run.

A process that leaves ``torch.distributed`` initialised at interpreter exit can abort there: gloo's worker threads
still hold work whose tensors reference Python objects, and destroying them while the interpreter is torn down ends in
``std::terminate`` ("terminate called without an active exception", SIGABRT). Under ``accelerate launch`` one aborted
rank makes the launcher kill the others, so a run that finished its work is reported as failed. Neither accelerate's
``PartialState`` nor lm-eval destroys the group at exit, so the components of prism_hf that start one register
[`destroy_process_group_at_exit`].
"""

import atexit
import logging

import torch

logger = logging.getLogger(__name__)

_registered = False


def _destroy_default_process_group() -> None:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return  # never started, or the script already destroyed it
    try:
        torch.distributed.destroy_process_group()
    except Exception as error:  # noqa: BLE001 - the process is exiting; a failed clean-up must not hide its exit code
        logger.debug("destroying the process group at exit failed: %s", error)


def destroy_process_group_at_exit() -> bool:
    """Destroy the default process group when the interpreter exits, while it is still fully alive.

    Idempotent: the handler is registered once per process, and does nothing when the group was never initialised or
    was already destroyed. Destroying is local (it waits for no other rank), so a rank that finishes before the others
    exits cleanly, and the others keep running.

    Returns:
        `bool`: whether this call registered the handler (``False`` when it was already registered).
    """
    global _registered
    if _registered:
        return False
    atexit.register(_destroy_default_process_group)
    _registered = True
    return True
