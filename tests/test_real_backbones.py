"""The whole PRISM workflow on the real LLaDA and Dream architectures, as a new user runs it.

Each backbone is the native port (`prism_hf.models`) built at a tiny width with the Hub checkpoint's vocabulary and
mask id, and saved in the Hub's folder layout (the published ``config.json`` fields, ``architectures`` and ``auto_map``
naming remote files that are not there). Then, without ``trust_remote_code``: load, forward, LoRA training with
gradient checkpointing through the Trainer argument, save, reload in a fresh process with identical outputs and dtype,
pipeline sampling with a padded batch equal to each prompt alone, and a pipeline save/load round trip with its
tokenizer. The conformance of the ports themselves to the published code is in tests/test_{llada,dream}_port.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file

from prism_hf import PrismForMaskedDiffusion
from prism_hf.pipeline_prism import PrismPipeline
from prism_hf.scheduling_prism import PrismScheduler
from prism_hf.testing import tiny_char_tokenizer, tiny_dream, tiny_llada, tiny_mdlm
from prism_hf.trainer import PrismTrainer
from prism_hf.training_args import PrismTrainingArguments

# The Hub checkpoints' vocabulary, mask and special ids (../shared/reference_models/README.md).
HUB = {
    "llada": dict(vocab_size=126464, mask_token_id=126336, eos=126081, architectures=["LLaDAModelLM"], auto_map={
        "AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"}),
    "dream": dict(vocab_size=152064, mask_token_id=151666, eos=151643, architectures=["DreamModel"], auto_map={
        "AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}),
}
FAMILIES = sorted(HUB)
SEQ = 10


def _hub_backbone(family: str, dtype=torch.float32, **kwargs):
    facts = HUB[family]
    if family == "llada":
        return tiny_llada(vocab_size=facts["vocab_size"], mask_token_id=facts["mask_token_id"], eos_token_id=facts["eos"],
                          pad_token_id=facts["eos"], **kwargs).to(dtype)
    return tiny_dream(vocab_size=facts["vocab_size"], mask_token_id=facts["mask_token_id"], eos_token_id=facts["eos"],
                      pad_token_id=facts["eos"], bos_token_id=facts["eos"], **kwargs).to(dtype)


def _save_hub_layout(model, folder: Path, family: str) -> Path:
    model.save_pretrained(folder, max_shard_size="2MB")  # sharded, with an index, as on the Hub
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = HUB[family]["architectures"]
    config["auto_map"] = HUB[family]["auto_map"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module", params=FAMILIES)
def hub_folder(request, tmp_path_factory):
    family = request.param
    folder = _save_hub_layout(_hub_backbone(family), tmp_path_factory.mktemp(family) / "backbone", family)
    assert (folder / "model.safetensors.index.json").is_file()
    return family, folder


def _ids(vocab: int, batch: int = 2, length: int = SEQ, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, min(vocab, 1000), (batch, length), generator=torch.Generator().manual_seed(seed))


def test_load_and_forward_without_remote_code(hub_folder):
    family, folder = hub_folder
    model = PrismForMaskedDiffusion.from_backbone(str(folder), head_type="mlp")
    assert type(model.backbone).__module__.startswith(f"prism_hf.models.{family}")
    assert model.mask_token_id == HUB[family]["mask_token_id"] and model.config.vocab_size == HUB[family]["vocab_size"]
    assert not model.config.backbone_trust_remote_code and model.config.backbone_dtype == "float32"
    out = model.eval()(_ids(model.config.vocab_size))
    assert out.logits.shape == (2, SEQ, HUB[family]["vocab_size"]) and out.quality_logits.shape == (2, SEQ)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.quality_logits).all()


def test_dtype_is_recorded_and_restored(hub_folder, tmp_path):
    """The backbone dtype of the checkpoint comes back exactly, whatever the folder it was loaded from stores."""
    family, folder = hub_folder
    for dtype, name in ((torch.bfloat16, "bfloat16"), (torch.float32, "float32")):
        model = PrismForMaskedDiffusion.from_backbone(str(folder), dtype=dtype, backbone_training="frozen")
        assert model.config.backbone_dtype == name and next(model.backbone.parameters()).dtype == dtype
        assert next(model.quality_head.parameters()).dtype == torch.float32  # the head stays float32
        model.save_pretrained(tmp_path / name)
        assert json.loads((tmp_path / name / "config.json").read_text())["backbone_dtype"] == name
        loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path / name)
        assert {p.dtype for p in loaded.backbone.parameters()} == {dtype}
        assert next(loaded.quality_head.parameters()).dtype == torch.float32
        x = _ids(model.config.vocab_size)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x).quality_logits, model.eval()(x).quality_logits, rtol=0, atol=0)
        from transformers import AutoModel

        auto = AutoModel.from_pretrained(tmp_path / name)  # the Auto class takes the same path
        assert type(auto) is PrismForMaskedDiffusion and {p.dtype for p in auto.backbone.parameters()} == {dtype}
        # An explicit dtype still wins.
        cast = PrismForMaskedDiffusion.from_pretrained(tmp_path / name, dtype="float32")
        assert next(cast.backbone.parameters()).dtype == torch.float32


def test_lora_training_with_gradient_checkpointing_save_and_reload_in_a_fresh_process(hub_folder, tmp_path):
    """LoRA on q/k/v plus the head, gradient checkpointing through the Trainer argument, a few steps; the saved
    checkpoint (adapter + head) reloads in a fresh process, which has not imported prism_hf.testing, with identical
    logits and quality and the same dtype."""
    family, folder = hub_folder
    model = PrismForMaskedDiffusion.from_backbone(str(folder), head_type="mlp")
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    data = datasets.Dataset.from_dict({"input_ids": torch.randint(0, 1000, (8, SEQ), generator=g).tolist(),
                                       "prompt_length": [2] * 8})
    args = PrismTrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
        use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, num_update_tokens=3, gradient_checkpointing=True,
    )
    trainer = PrismTrainer(model, args, train_dataset=data,
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"]))
    raw = model._raw_backbone()
    recomputed = []
    # A module inside the first layer: checkpointing wraps the layer's forward, so it runs again in the backward.
    first_layer = raw.model.transformer.blocks[0] if family == "llada" else raw.model.layers[0]
    inner = first_layer.attn_norm if family == "llada" else first_layer.input_layernorm
    hooks = [inner.register_forward_pre_hook(lambda m, a: recomputed.append(torch.is_grad_enabled()))]
    lora_before = {n: p.detach().clone() for n, p in model.backbone.named_parameters() if "lora_B" in n}
    trainer.train()
    for hook in hooks:
        hook.remove()
    assert raw.is_activation_checkpointing
    # 2 steps x 2 backbone forwards (on z and on y), each recomputed in the backward: a checkpointed layer runs 8 times.
    assert len(recomputed) == 8
    assert any(not torch.equal(p, dict(model.backbone.named_parameters())[n]) for n, p in lora_before.items())
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)

    model.eval()
    save = tmp_path / "prism"
    model.save_pretrained(save)
    assert (save / "adapter" / "adapter_config.json").is_file()
    assert all(k.startswith("quality_head.") for k in load_file(str(save / "model.safetensors")))
    x = _ids(vocab, seed=3)
    with torch.no_grad():
        expected = model(x)
    torch.save({"ids": x, "logits": expected.logits, "quality": expected.quality_logits}, tmp_path / "expected.pt")
    script = (
        "import sys, torch\n"
        "from prism_hf import PrismForMaskedDiffusion\n"
        f"m = PrismForMaskedDiffusion.from_pretrained({str(save)!r})\n"
        "assert 'prism_hf.testing' not in sys.modules\n"
        f"e = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "with torch.no_grad():\n"
        "    out = m(e['ids'])\n"
        "assert torch.equal(out.logits, e['logits']), (out.logits - e['logits']).abs().max()\n"
        "assert torch.equal(out.quality_logits, e['quality'])\n"
        "assert {p.dtype for n, p in m.backbone.named_parameters()} == {torch.float32}\n"
        f"assert type(m._raw_backbone()).__module__.startswith('prism_hf.models.{family}')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_gradient_checkpointing_gives_the_same_gradients_under_lora(hub_folder):
    family, folder = hub_folder
    x = _ids(HUB[family]["vocab_size"])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = PrismForMaskedDiffusion.from_backbone(str(folder), head_type="mlp")
        model.enable_lora(LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model.train()
        out = model(x)
        (out.logits.float().logsumexp(-1).mean() + out.quality_logits.mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("lora_A" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)


def _char_prism(family: str, seed: int = 0) -> PrismForMaskedDiffusion:
    """A PRISM model whose vocabulary is the tiny character tokenizer's, with a head that spreads its scores."""
    tokenizer = tiny_char_tokenizer()
    builder = {"llada": tiny_llada, "dream": tiny_dream, "mdlm": tiny_mdlm}[family]
    kwargs = dict(vocab_size=len(tokenizer), seed=seed)
    if family != "mdlm":
        kwargs["mask_token_id"] = tokenizer.mask_token_id
    model = PrismForMaskedDiffusion.from_backbone(builder(**kwargs), tokenizer=tokenizer).eval()
    with torch.no_grad():
        for p in model.quality_head.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("remasking", ["prism", "none"])
def test_pipeline_padded_batch_equals_each_prompt_alone(family, remasking):
    model = _char_prism(family)
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(remasking=remasking, num_remask=2), tokenizer=tiny_char_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    prompts = ["def f(x):", "x", "return 1"]
    kwargs = dict(gen_length=8, block_length=4, num_inference_steps=8)
    batch = pipe(prompt=prompts, **kwargs)
    for row, prompt in enumerate(prompts):
        alone = pipe(prompt=prompt, **kwargs)
        assert torch.equal(batch.sequences[row], alone.sequences[0]), (family, prompt)
        if alone.quality is not None:
            torch.testing.assert_close(batch.quality[row], alone.quality[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["llada", "dream", "mdlm"])
def test_pipeline_save_and_load_round_trip_with_its_tokenizer(family, tmp_path):
    model = _char_prism(family)
    tokenizer = tiny_char_tokenizer()
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(remasking="prism", num_remask=1), tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer").is_dir()
    loaded = PrismPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.model) is PrismForMaskedDiffusion and loaded.tokenizer is not None
    assert loaded.tokenizer.mask_token_id == tokenizer.mask_token_id
    kwargs = dict(prompt=["abc", "de"], gen_length=8, num_inference_steps=4)
    a, b = pipe(**kwargs), loaded(**kwargs)
    assert torch.equal(a.sequences, b.sequences) and a.texts == b.texts
    torch.testing.assert_close(a.quality, b.quality, rtol=0, atol=0)


# ----- the published code as an explicit opt-out ----------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_remote_implementation_of_the_published_code_fails_with_a_pointer_to_the_port(family, tmp_path):
    """backbone_implementation='remote' runs the Hub's published code (here the copy in ../shared, laid out as the Hub
    folder ships it); under transformers 5 it fails, and the error says so and names the native port."""
    import shutil

    from reference_models import REFERENCE_DIR

    source = REFERENCE_DIR / family
    if not source.is_dir():
        pytest.skip(f"the published {family} code is not at {source}")
    folder = _save_hub_layout(_hub_backbone(family), tmp_path / family, family)
    for path in source.glob("*.py"):
        if path.name != "__init__.py":
            shutil.copyfile(path, folder / path.name)
    native = {"llada": "prism_hf.models.llada.LLaDAModelLM", "dream": "prism_hf.models.dream.DreamModel"}[family]
    with pytest.raises(RuntimeError, match=rf"(?s)published remote code.*transformers 5.*{native}"):
        PrismForMaskedDiffusion.from_backbone(str(folder), backbone_implementation="remote", trust_remote_code=True)
    # The default never runs it, with or without trust_remote_code.
    model = PrismForMaskedDiffusion.from_backbone(str(folder), trust_remote_code=True)
    assert type(model.backbone).__module__ == f"prism_hf.models.{family}.modeling_{family}"


# ----- bad input ------------------------------------------------------------------------------------------------
def test_checkpoint_weights_that_do_not_match_the_config_are_listed(hub_folder, tmp_path):
    family, folder = hub_folder
    from safetensors.torch import save_file

    model = _hub_backbone(family)
    state = {k: v for k, v in model.state_dict().items()}
    dropped = sorted(state)[0]
    state.pop(dropped)
    state["extra.weight"] = torch.zeros(2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in state.items()}, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"(?s)(missing|Missing).*" + dropped.split(".")[-2]):
        PrismForMaskedDiffusion.from_backbone(str(broken))


def test_mask_id_outside_the_vocabulary_is_refused(hub_folder, tmp_path):
    family, folder = hub_folder
    config = json.loads((folder / "config.json").read_text())
    config["mask_token_id"] = HUB[family]["vocab_size"] + 5
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"mask_token_id={HUB[family]['vocab_size'] + 5}"):
        PrismForMaskedDiffusion.from_backbone(str(bad))


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_unavailable_attention_implementation_is_refused(family, tmp_path):
    builder = {"llada": tiny_llada, "dream": tiny_dream}[family]
    folder = tmp_path / family
    builder().save_pretrained(folder)
    with pytest.raises((ValueError, ImportError), match="(?i)flash.*(not.*installed|not available|not supported)"):
        PrismForMaskedDiffusion.from_backbone(str(folder), attn_implementation="flash_attention_2")
    model = PrismForMaskedDiffusion.from_backbone(str(folder), attn_implementation="eager")
    assert model._raw_backbone().config._attn_implementation == "eager"


def test_memory_benchmark_counts_the_real_8b_and_7b_models_on_the_meta_device(capsys):
    """benchmarks/memory_8b.py: parameter counts of the real configurations, and LoRA counts that match the formula."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_8b", Path(__file__).parents[1] / "benchmarks" / "memory_8b.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--num-gpus", "8"])
    llada, dream = results["llada"]["counts"], results["dream"]["counts"]
    assert 7.9e9 < llada["backbone"] < 8.1e9 and 7.5e9 < dream["backbone"] < 7.7e9
    r = 256
    assert llada["lora"] == 32 * 3 * r * (4096 + 4096)  # q/k/v are 4096 -> 4096 (no GQA)
    assert dream["lora"] == 28 * r * ((3584 + 3584) + 2 * (3584 + 512))  # k/v project to 4 heads of 128
    assert llada["head"] == 4096 * 4096 + 4096 + 2 * 4096 + 4096 + 1  # LayerNorm, Linear(d, d), Linear(d, 1)
    ddp, zero3 = results["llada"]["per_gpu_bytes"]["DDP"], results["llada"]["per_gpu_bytes"]["ZeRO-3"]
    assert ddp["weights"] == 2 * llada["backbone"] + 4 * llada["trained"] and ddp["optimizer"] == 8 * llada["trained"]
    assert zero3["total"] == pytest.approx(ddp["total"] / 8)
    assert "ZeRO-2" in capsys.readouterr().out


def test_auto_dtype_and_the_transformers_4_dtype_name(tmp_path):
    folder = tmp_path / "bb"
    tiny_llada().save_pretrained(folder)
    model = PrismForMaskedDiffusion.from_backbone(str(folder), torch_dtype=torch.bfloat16)  # the transformers 4 name
    assert model.config.backbone_dtype == "bfloat16" and next(model.backbone.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="disagree"):
        PrismForMaskedDiffusion.from_backbone(str(folder), dtype=torch.float32, torch_dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "full")  # a full fine-tune: the backbone is stored in the checkpoint
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path / "full", dtype="auto")
    assert {p.dtype for p in loaded.backbone.parameters()} == {torch.bfloat16}
