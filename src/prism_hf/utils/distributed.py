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
import sys

import torch

logger = logging.getLogger(__name__)

_registered = False


def _exiting_on_an_uncaught_exception() -> bool:
    # The interpreter sets these before it runs the atexit handlers of a program that ends in an uncaught exception.
    return getattr(sys, "last_exc", None) is not None or getattr(sys, "last_value", None) is not None


def _destroy_default_process_group() -> None:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return  # never started, or the script already destroyed it
    if _exiting_on_an_uncaught_exception():
        # A rank that fails while the others wait in a collective must exit now, so that the launcher sees it die and
        # stops the rest. Destroying an NCCL group waits for its pending work (torch >= 2.6), which here never ends.
        return
    try:
        torch.distributed.destroy_process_group()
    except Exception as error:  # noqa: BLE001 - the process is exiting; a failed clean-up must not hide its exit code
        logger.debug("destroying the process group at exit failed: %s", error)


def destroy_process_group_at_exit() -> bool:
    """Destroy the default process group when the interpreter exits, while it is still fully alive.

    Idempotent: the handler is registered once per process, and does nothing when the group was never initialised or
    was already destroyed, or when the program ends in an uncaught exception (a failing rank must exit at once; an NCCL
    group's destroy would wait for collectives its peers never finish). After a normal end no collective is pending,
    so a rank that finishes before the others exits cleanly (with gloo, destroying waits for no other rank).

    atexit runs its handlers last-registered first: a script that registered its own
    ``atexit.register(torch.distributed.destroy_process_group)`` before building a trainer or ``PrismLM`` finds the
    group already destroyed, and its handler prints an ignored exception. Such a script can drop its handler, or
    destroy the group at the end of its ``main`` instead (after which this handler does nothing).

    Returns:
        `bool`: whether this call registered the handler (``False`` when it was already registered).
    """
    global _registered
    if _registered:
        return False
    atexit.register(_destroy_default_process_group)
    _registered = True
    return True
