"""Checkpoints, scheduler configs and import paths of the release before the package was regrouped still work.

``tests/fixtures/release_0_1_0`` was written by ``make_fixture.py`` (in that folder) with prism_hf 0.1.0 as it was
before ``modeling/``, ``training/`` and ``sampling/`` existed (commit 6a70737 plus docs). The expected figures
were computed by that release on the machine that wrote them; the tolerances below come from float32 and the
size of the reductions (width 16), not from one machine.
"""

import importlib
import json
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "release_0_1_0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
# float32 outputs of a 1-layer width-16 model: reductions of at most 48 terms, values of order 1.
ATOL = 8 * torch.finfo(torch.float32).eps * 48**0.5 * 10

OLD_PATHS = {
    "prism_hf.configuration_prism": "prism_hf.modeling.configuration_prism",
    "prism_hf.modeling_prism": "prism_hf.modeling.modeling_prism",
    "prism_hf.heads": "prism_hf.modeling.heads",
    "prism_hf.families": "prism_hf.modeling.families",
    "prism_hf.trainer": "prism_hf.training.trainer",
    "prism_hf.losses": "prism_hf.training.losses",
    "prism_hf.data": "prism_hf.training.collator",
    "prism_hf.training_args": "prism_hf.training.training_args",
    "prism_hf.scheduling_prism": "prism_hf.sampling.scheduling_prism",
    "prism_hf.pipeline_prism": "prism_hf.sampling.pipeline_prism",
    "prism_hf.remasking": "prism_hf.sampling.remasking",
    "prism_hf.unmasking": "prism_hf.sampling.unmasking",
}


@pytest.mark.parametrize("old,new", sorted(OLD_PATHS.items()))
def test_old_module_paths_are_the_new_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_public_names_of_the_previous_release_import():
    import prism_hf

    for name in ["PrismConfig", "PrismForMaskedDiffusion", "PrismModelOutput", "BackboneFamily", "register_family",
                 "get_family", "QualityHead", "register_head", "HEAD_REGISTRY", "PrismScheduler", "PrismPipeline",
                 "PrismPipelineOutput", "PrismSchedulerOutput", "register_unmasking_rule", "register_remasking_rule",
                 "register_remask_schedule", "MDMTrainer", "PrismTrainer", "MaskedDiffusionTrainingArguments",
                 "PrismTrainingArguments", "MaskedDiffusionCollator", "LLaDAConfig", "LLaDAModelLM", "DreamConfig",
                 "DreamModel", "MDLMConfig", "MDLMForMaskedLM"]:
        assert getattr(prism_hf, name) is not None, name
    from prism_hf.losses import binary_auroc, forward_mask, mdm_loss, prism_step  # noqa: F401
    from prism_hf.pipeline_prism import PrismPipeline
    from prism_hf.scheduling_prism import PrismScheduler

    assert PrismPipeline is prism_hf.PrismPipeline and PrismScheduler is prism_hf.PrismScheduler


@pytest.mark.parametrize("name", ["llada-mlp", "bert-linear"])
def test_checkpoints_of_the_previous_release_load_and_agree(name):
    from prism_hf import PrismForMaskedDiffusion

    model = PrismForMaskedDiffusion.from_pretrained(FIXTURE / name)
    model.eval()
    ids = torch.tensor(EXPECTED["input_ids"])
    with torch.no_grad():
        out = model(ids)
    expected = EXPECTED[name]
    torch.testing.assert_close(out.quality_logits.double(), torch.tensor(expected["quality_logits"], dtype=torch.float64),
                               atol=ATOL, rtol=0)
    assert abs(float(out.logits.double().sum()) - expected["logits_sum"]) <= ATOL * out.logits.numel() ** 0.5


def test_scheduler_config_and_a_greedy_run_of_the_previous_release():
    from prism_hf import PrismForMaskedDiffusion, PrismPipeline, PrismScheduler

    scheduler = PrismScheduler.from_pretrained(FIXTURE / "scheduler")
    assert scheduler.config.remasking == "prism" and scheduler.config.num_remask == 1
    model = PrismForMaskedDiffusion.from_pretrained(FIXTURE / "llada-mlp")
    model.eval()
    pipe = PrismPipeline(model=model, scheduler=scheduler)
    result = pipe(input_ids=torch.tensor([[5, 9, 12]]), gen_length=8, num_inference_steps=8, block_length=4,
                  output_type="seq", show_progress=False)
    assert result.sequences.tolist() == EXPECTED["pipeline"]["sequences"]


def test_registries_keep_the_dict_api_of_the_previous_release_with_a_warning():
    from prism_hf.modeling.heads import HEAD_REGISTRY, LinearQualityHead
    from prism_hf.utils.registry import Registry

    registry = Registry("widget", "widget")
    registry.register("a", 1)
    with pytest.warns(FutureWarning, match=r"\.pop\(name\)` is deprecated"):
        assert registry.pop("a") == 1
    assert "a" not in registry
    with pytest.warns(FutureWarning):
        assert registry.pop("a", None) is None
    with pytest.warns(FutureWarning), pytest.raises(KeyError):
        registry.pop("a")
    with pytest.warns(FutureWarning, match="Assigning into the widget registry is deprecated"):
        registry["b"] = 2
    assert registry["b"] == 2
    with pytest.raises(ValueError, match=r"widget='c' is not a known widget; valid names: \['b'\]"):
        registry.lookup("c")
    assert HEAD_REGISTRY["linear"] is LinearQualityHead and isinstance(HEAD_REGISTRY, Registry)


def test_registries_answer_the_rest_of_the_dict_api_with_a_warning():
    from prism_hf.utils.registry import Registry

    registry = Registry("widget", "widget")
    registry.register("a", 1)
    assert registry.copy() == {"a": 1} and isinstance(registry.copy(), dict)
    with pytest.warns(FutureWarning, match=r"\.update\(\.\.\.\)` is deprecated"):
        registry.update({"b": 2}, c=3)
    with pytest.warns(FutureWarning, match=r"setdefault"):
        assert registry.setdefault("a", 9) == 1 and registry.setdefault("d", 4) == 4
    with pytest.warns(FutureWarning, match=r"del registry\[name\]"):
        del registry["b"]
    assert dict(registry) == {"a": 1, "c": 3, "d": 4}


def test_private_pipeline_names_of_the_previous_release_warn_and_answer():
    from prism_hf import PrismForMaskedDiffusion, PrismPipeline, PrismScheduler

    model = PrismForMaskedDiffusion.from_pretrained(FIXTURE / "llada-mlp").eval()
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler.from_pretrained(FIXTURE / "scheduler"))
    ids = torch.tensor(EXPECTED["input_ids"])
    with pytest.warns(FutureWarning, match=r"PrismPipeline\._forward` is deprecated"):
        logits, quality = pipe._forward(ids, None)
    expected_logits, expected_quality = pipe.model_forward(ids, None)
    assert torch.equal(logits, expected_logits) and torch.equal(quality, expected_quality)
    with pytest.warns(FutureWarning):
        assert pipe._max_length() == pipe.max_length
    with pytest.warns(FutureWarning):
        assert pipe._takes_padding_mask() is pipe.takes_padding_mask is True


def test_a_count_rule_declared_by_kind_still_runs_as_one():
    """0.1.0 rules said ``kind = "count"`` on any RemaskingRule subclass; such a rule still remasks (with a warning)."""
    from prism_hf import PrismScheduler
    from prism_hf.sampling.remasking import REMASKING_RULES, CountRemaskingRule, RemaskingRule, register_remasking_rule

    with pytest.warns(FutureWarning, match=r"`kind = 'count'` on a class that does not subclass CountRemaskingRule"):
        @register_remasking_rule("test-kind-count")
        class KindCount(RemaskingRule):
            kind = "count"

            def score(self, context):
                return context.token_confidence

    try:
        assert issubclass(KindCount, CountRemaskingRule) and REMASKING_RULES["test-kind-count"] is KindCount
        torch.manual_seed(0)
        sample = torch.tensor([[5, 9, 12, 3, 47, 47, 47, 47]])
        logits, confidence = torch.randn(1, 8, 48), torch.tensor([[0.9, 0.2, 0.7, 0.5, 0.0, 0.0, 0.0, 0.0]])
        outs = {}
        for name in ("test-kind-count", "confidence"):
            scheduler = PrismScheduler(remasking=name, num_remask=1)
            scheduler.set_timesteps(4)
            outs[name] = scheduler.step(logits, 2, sample, mask_token_id=47, token_confidence=confidence)
        assert int(outs["test-kind-count"].num_remasked.sum()) == 1  # 0.1.0 remasked here; a kind-only rule must too
        assert torch.equal(outs["test-kind-count"].remasked, outs["confidence"].remasked)
        assert bool(outs["test-kind-count"].remasked[0, 1])  # the lowest confidence (0.2) goes back to the mask
    finally:
        REMASKING_RULES.unregister("test-kind-count")
