"""A multi-process run ends with its process group destroyed (prism_hf.utils.distributed).

Left initialised at interpreter exit, a gloo group can abort the process there ("terminate called without an active
exception", SIGABRT): with two ranks that gather and exit, about one launch in five aborted on the 2-core CI machine,
and under ``accelerate launch`` that fails a run whose work had finished.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

_CHILD = textwrap.dedent(
    """
    import atexit, os, sys, tempfile
    import torch, torch.distributed as dist
    from prism_hf.utils import distributed

    rank, world, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # registered first, so it runs after prism_hf's handler (atexit runs last-in first-out)
    atexit.register(lambda: print(f"initialised at exit: {dist.is_initialized()}", flush=True))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    print(f"registered: {distributed.destroy_process_group_at_exit()}", flush=True)
    print(f"registered again: {distributed.destroy_process_group_at_exit()}", flush=True)
    out = [torch.empty(1) for _ in range(world)]
    dist.all_gather(out, torch.tensor([float(rank)]))
    gathered = [None] * world if rank == 0 else None
    dist.gather_object({"rank": rank}, gathered, dst=0)
    if os.environ.get("PRISM_TEST_RAISE"):
        raise RuntimeError("this rank fails")
    """
)


def _launch(tmp_path, world: int, env=None):
    store = tmp_path / "store"
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(rank), str(world), str(store)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for rank in range(world)
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:  # a hung rank must not outlive the test
            if p.poll() is None:
                p.kill()
    return [(p.returncode, *out) for p, out in zip(procs, outputs)]


def test_the_handler_destroys_the_group_before_the_interpreter_is_torn_down(tmp_path):
    for code, out, err in _launch(tmp_path, world=2):
        assert code == 0, err[-2000:]
        assert "terminate called" not in err
        assert out.splitlines() == ["registered: True", "registered again: False", "initialised at exit: False"], out


def test_the_handler_is_a_no_op_without_a_group():
    script = "from prism_hf.utils import distributed as d; d.destroy_process_group_at_exit(); d._destroy_default_process_group(); print('ok')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_handler_leaves_the_group_alone_when_the_program_fails(tmp_path):
    """A rank that ends in an uncaught exception exits at once: destroying an NCCL group would wait for collectives
    that its peers never finish, so the handler does not destroy it then."""
    for code, out, err in _launch(tmp_path, world=1, env={**os.environ, "PRISM_TEST_RAISE": "1"}):
        assert code == 1 and "RuntimeError: this rank fails" in err, err[-2000:]
        assert out.splitlines()[-1] == "initialised at exit: True", out
