"""The Python examples of docs/training.md run as written (on tiny in-process models)."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def test_training_doc_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(blocks) == 3
    namespace = {"__name__": "training_doc"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 4 and namespace["model"].config.backbone_training == "lora"
    assert (tmp_path / "prism-run" / "checkpoint-4" / "adapter").is_dir()
    assert any("quality_auroc" in log for log in trainer.state.log_history)
