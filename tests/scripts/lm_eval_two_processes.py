"""Launched by tests/test_lm_eval.py under `accelerate launch --num_processes 2`.

Usage: ``lm_eval_two_processes.py OUT_DIR TASKS_DIR MODEL_ARGS``. Every rank builds the 'prism' lm-eval model from
MODEL_ARGS and runs lm-eval's ``simple_evaluate`` on the two local test tasks of TASKS_DIR; each rank writes
``rank{r}.json`` (its rank, world size, the requests it ran itself and whether prism_hf will destroy the process
group at exit), and rank 0 also writes ``results.json`` (the
gathered sample counts, every document's generated reply and the NFE summed over ranks).
"""

import json
import sys
from pathlib import Path

from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from prism_hf.evaluation.lm_eval_model import PrismLM
from prism_hf.utils import distributed

GEN_TASK, MC_TASK = "prism_test_gen", "prism_test_mc"


def main(out_dir: str, tasks_dir: str, model_args: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm = PrismLM.create_from_arg_string(model_args, {"batch_size": 2, "device": "cpu"})
    results = simple_evaluate(model=lm, tasks=[GEN_TASK, MC_TASK], task_manager=TaskManager(include_path=tasks_dir, include_defaults=False),
                              log_samples=True)
    local = {kind: dict(counts) for kind, counts in lm._nfe_local.items()}
    (out / f"rank{lm.rank}.json").write_text(json.dumps({"rank": lm.rank, "world_size": lm.world_size, "local_nfe": local,
                                                                    "destroys_group_at_exit": distributed._registered}))
    if lm.rank == 0:
        replies = {str(s["doc_id"]): s["resps"][0][0] for s in results["samples"][GEN_TASK]}
        summary = {"n_samples": results["n-samples"], "replies": replies, "nfe": results["config"]["prism"]["nfe"]}
        (out / "results.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:4])
