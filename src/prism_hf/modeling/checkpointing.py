"""The on-disk layout of a PRISM checkpoint, in one place: what is saved, how it is read back, the model card, where a
checkpoint or a backbone is found (a folder or the Hub), and the backbone's dtype.

Layout written by [`save_checkpoint`] (``PrismForMaskedDiffusion.save_pretrained``):

* ``config.json``: the [`PrismConfig`], with ``backbone_weights_saved`` (whether the backbone's weights are stored
  here) and ``backbone_dtype``;
* ``model.safetensors``: the quality head, plus the backbone's weights when the backbone is fully fine-tuned or has no
  Hub/path reference (tied weights once);
* ``adapter/``: the PEFT adapter of a LoRA backbone;
* ``README.md``: the model card.

[`load_checkpoint`] (``from_pretrained``) reads it back, and [`restore_training_checkpoint`] reloads it into a model
being trained (``PrismTrainer``'s ``resume_from_checkpoint``). Safetensors only: nothing here unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.utils import logging

from .configuration_prism import BACKBONE_IMPLEMENTATIONS, PRISM_FORMAT_VERSION, PrismConfig
from .families import BackboneFamily, get_family

logger = logging.get_logger(__name__)

__all__ = [
    "CHECKPOINT_WEIGHTS_NAME",
    "ADAPTER_DIRNAME",
    "save_checkpoint",
    "load_checkpoint",
    "restore_training_checkpoint",
    "load_state_into",
    "load_checkpoint_weights",
    "read_checkpoint_config",
    "stores_backbone_weights",
    "resolve_checkpoint_folder",
    "resolve_backbone",
    "load_backbone",
    "backbone_from_config",
    "model_card",
    "as_torch_dtype",
    "merge_dtype_alias",
    "dtype_name",
    "parameter_dtype",
    "is_peft_model",
]

CHECKPOINT_WEIGHTS_NAME = "model.safetensors"
ADAPTER_DIRNAME = "adapter"
#: Hub arguments that apply to the checkpoint and to a backbone loaded by reference.
HUB_KWARGS = ("cache_dir", "token", "local_files_only", "force_download")
#: Keyword arguments transformers' Auto classes add for the model they load (the PRISM model, not its backbone).
_INTERNAL_KWARGS = ("config", "_from_auto", "_from_pipeline", "_commit_hash", "adapter_kwargs", "code_revision")
#: Loading arguments about a backbone weight file, which a checkpoint that stores the backbone's weights has not.
_STORED_BACKBONE_NO_OPS = ("low_cpu_mem_usage", "use_safetensors")


def is_peft_model(module: nn.Module) -> bool:
    """Whether ``module`` is a `peft.PeftModel` (a backbone behind an adapter)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a core dependency
        return False
    return isinstance(module, PeftModel)


def _storage_key(tensor: torch.Tensor) -> Optional[Tuple[int, int, Tuple[int, ...]]]:
    """Identity of a tensor's memory (tied weights share it); `None` on the meta device."""
    if tensor.device.type == "meta":
        return None
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)


# ----- dtype ----------------------------------------------------------------------------------------------
def parameter_dtype(module: nn.Module) -> Optional[torch.dtype]:
    """The dtype of the module's first floating-point parameter (buffers such as RoPE tables are not counted)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def dtype_name(dtype: Optional[torch.dtype]) -> Optional[str]:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the form recorded in ``PrismConfig.backbone_dtype``)."""
    return None if dtype is None else str(dtype).replace("torch.", "")


def as_torch_dtype(dtype: Any) -> Optional[torch.dtype]:
    """``torch.bfloat16``, ``"bfloat16"`` or ``"torch.bfloat16"`` -> ``torch.bfloat16``; ``None`` / ``"auto"`` -> ``None``."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return None if dtype == "auto" else dtype
    value = getattr(torch, str(dtype).replace("torch.", ""), None) if isinstance(dtype, str) else None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(
            f"dtype={dtype!r} is not a floating-point torch dtype; pass e.g. torch.bfloat16, 'bfloat16', 'float32' or 'auto'."
        )
    return value


def single_device(device_map: Any, device: Any) -> Any:
    """A backbone stored in the checkpoint is built in this process: it accepts one device, not a sharding plan."""
    if device_map is None:
        return device
    if device_map == "auto":
        return device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, (str, torch.device, int)):
        return device or device_map
    raise ValueError(
        f"device_map={device_map!r}: this checkpoint stores its backbone's weights, which load on one device; pass "
        "device_map='cuda:0' (or device=). A sharding plan works for checkpoints whose backbone is loaded by reference."
    )


def merge_dtype_alias(kwargs: Dict[str, Any], dtype: Any) -> Any:
    """Take transformers 4's ``torch_dtype`` out of ``kwargs`` (some loaders, diffusers among them, still send it);
    returns the dtype to use. Both names with different values raise a `ValueError`."""
    if "torch_dtype" not in kwargs:
        return dtype
    torch_dtype = kwargs.pop("torch_dtype")
    if dtype is not None and torch_dtype is not None and as_torch_dtype(dtype) != as_torch_dtype(torch_dtype):
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them (dtype).")
    return torch_dtype if dtype is None else dtype


# ----- finding and reading a checkpoint ---------------------------------------------------------------------
def resolve_checkpoint_folder(name_or_path, revision=None, **hub_kwargs) -> Path:
    """The local folder of a PRISM checkpoint: ``name_or_path`` itself (plus ``subfolder``), or the files of the
    layout downloaded from the Hub."""
    path = Path(name_or_path)
    subfolder = hub_kwargs.pop("subfolder", None)
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not (folder / "config.json").is_file():
            raise OSError(f"{str(folder)!r} has no config.json; is it a PRISM checkpoint saved with save_pretrained?")
        return folder
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            str(name_or_path),
            revision=revision,
            allow_patterns=[f"{subfolder + '/' if subfolder else ''}{p}" for p in ("config.json", CHECKPOINT_WEIGHTS_NAME, f"{ADAPTER_DIRNAME}/*", "README.md")],
            **hub_kwargs,
        )
    except Exception as err:
        raise OSError(
            f"{str(name_or_path)!r} is neither a local folder nor a reachable Hub repo ({type(err).__name__}: {err}). "
            "Check the path, or go online / pre-download the repo when HF_HUB_OFFLINE=1."
        ) from err
    return Path(local) / subfolder if subfolder else Path(local)


def read_checkpoint_config(folder: Path, name_or_path: Any) -> Dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, refusing a damaged file, another model type or a newer format."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(name_or_path)!r}: config.json is not valid JSON ({err}); the checkpoint is damaged.") from err
    if not isinstance(raw, dict) or raw.get("model_type") != PrismConfig.model_type:
        found = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(
            f"{str(name_or_path)!r} is not a PRISM checkpoint (model_type={found!r}). "
            "To wrap a plain backbone use PrismForMaskedDiffusion.from_backbone(...)."
        )
    version = raw.get("prism_format_version", 0)
    if version > PRISM_FORMAT_VERSION:
        raise ValueError(
            f"Checkpoint {str(name_or_path)!r} has prism_format_version={version}, newer than the "
            f"{PRISM_FORMAT_VERSION} this prism_hf reads. Upgrade prism_hf (pip install -U prism-hf)."
        )
    return raw


def stores_backbone_weights(config: Union[Dict[str, Any], PrismConfig]) -> bool:
    """Whether a saved checkpoint holds its backbone's weights (read from ``backbone_weights_saved``; checkpoints that
    predate the record hold them exactly when they record no backbone reference)."""
    read = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    recorded = read("backbone_weights_saved", None)
    return bool(read("backbone_name_or_path", None) is None if recorded is None else recorded)


def load_checkpoint_weights(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read a checkpoint's ``model.safetensors``, with a clear error for a missing, empty, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise OSError(f"{str(path)!r} is missing: a PRISM checkpoint holds its head (and trained weights) there.")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file ({type(err).__name__}: {err}); the checkpoint is damaged or "
            f"incomplete ({path.stat().st_size} bytes). Save it again, or download it again."
        ) from err


# ----- backbones --------------------------------------------------------------------------------------------
# Errors the published remote code of LLaDA and Dream raises under transformers 5 (see prism_hf.models).
_KNOWN_REMOTE_CODE_FAILURES = (
    "all_tied_weights_keys",
    "recompute_mapping",
    "use_cache",
    "ROPE_INIT_FUNCTIONS",
    "KeyError: 'default'",
    "_tied_weights_keys",
    "validate()",
)


def check_implementation(backbone_implementation: str, trust_remote_code: Optional[bool]) -> None:
    """Refuse an unknown ``backbone_implementation``, and ``"remote"`` without ``trust_remote_code=True``."""
    if backbone_implementation not in BACKBONE_IMPLEMENTATIONS:
        raise ValueError(
            f"backbone_implementation={backbone_implementation!r} is not valid; choose one of "
            f"{list(BACKBONE_IMPLEMENTATIONS)} ('native': prism_hf's port where there is one; 'remote': the Hub's code)."
        )
    if backbone_implementation == "remote" and trust_remote_code is not True:
        raise ValueError(
            "backbone_implementation='remote' runs the Hub's published model code: pass trust_remote_code=True as well "
            "if you trust it (it is never turned on for you)."
        )


def uses_remote_code(family: BackboneFamily, trust_remote_code: Optional[bool], backbone_implementation: str) -> bool:
    """Whether the backbone is (to be) built from remote code: never for a family with a native port unless the
    caller opted out with ``backbone_implementation="remote"``."""
    if family.native_class is not None:
        return backbone_implementation == "remote"
    return bool(trust_remote_code)


def load_backbone(
    name_or_path: str, *, revision=None, trust_remote_code=False, backbone_implementation: str = "native", dtype=None,
    **load_kwargs,
) -> PreTrainedModel:
    """Load a backbone from the Hub or a folder with its family's Auto class.

    A family with a native port in ``prism_hf.models`` is loaded with it (``trust_remote_code`` is not needed and is
    not passed on, so the Hub's ``auto_map`` is never followed) unless ``backbone_implementation="remote"``.
    Weights load from safetensors unless the caller passes ``use_safetensors=False``.
    """
    import transformers
    from transformers import PretrainedConfig

    hub_kwargs = {k: load_kwargs[k] for k in ("cache_dir", "token", "local_files_only", "force_download") if k in load_kwargs}
    raw_config, _ = PretrainedConfig.get_config_dict(name_or_path, revision=revision, **hub_kwargs)
    family = get_family(raw_config.get("model_type") or "")
    remote = uses_remote_code(family, trust_remote_code, backbone_implementation)
    if remote and not trust_remote_code:
        raise ValueError(
            f"The backbone {name_or_path!r} (model_type={raw_config.get('model_type')!r}) needs its remote code: pass "
            "trust_remote_code=True if you trust it (it is never turned on for you)."
        )
    torch_dtype = as_torch_dtype(dtype)
    load_kwargs["dtype"] = torch_dtype if torch_dtype is not None else load_kwargs.get("dtype", "auto")
    load_kwargs.setdefault("use_safetensors", True)
    auto_cls = getattr(transformers, family.auto_class)
    folder = Path(name_or_path)
    if load_kwargs["use_safetensors"] and folder.is_dir() and not any(folder.glob("*.safetensors")) and (
        any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    ):
        raise OSError(
            f"{name_or_path!r} holds only pickle weights (*.bin / *.pt), which can run code when loaded; prism_hf loads "
            "backbones from safetensors. Convert them (save_pretrained writes safetensors), or, if you trust the file, "
            "pass use_safetensors=False explicitly."
        )
    try:
        if remote and family.native_class is not None:
            # The Auto classes prefer a registered local class (the native port) even with trust_remote_code=True, so
            # the opt-out fetches the published classes named in the folder's auto_map directly.
            config_cls, model_cls = _remote_code_classes(name_or_path, raw_config, family, revision=revision, **hub_kwargs)
            config = config_cls.from_pretrained(name_or_path, revision=revision, **hub_kwargs)
            return model_cls.from_pretrained(name_or_path, config=config, revision=revision, **load_kwargs)
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=remote, **hub_kwargs)
        return auto_cls.from_pretrained(name_or_path, config=config, revision=revision, trust_remote_code=remote, **load_kwargs)
    except (AttributeError, TypeError, KeyError) as err:
        text = f"{type(err).__name__}: {err}"
        if remote and family.native_class is not None and any(marker in text for marker in _KNOWN_REMOTE_CODE_FAILURES):
            raise RuntimeError(
                f"The published remote code of the {family.name!r} backbone {name_or_path!r} failed under transformers "
                f"{transformers.__version__} ({text}). That code predates transformers 5; prism_hf ships a native port, "
                f"{family.native_class}, which loads the same checkpoint: drop backbone_implementation='remote' (the "
                "default is 'native')."
            ) from err
        raise


def _remote_code_classes(name_or_path: str, raw_config: Dict[str, Any], family: BackboneFamily, revision=None, **hub_kwargs):
    """The config and model classes of the remote code named in a checkpoint's ``auto_map``."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = raw_config.get("auto_map") or {}
    config_ref, model_ref = auto_map.get("AutoConfig"), auto_map.get(family.auto_class) or auto_map.get("AutoModel")
    if not config_ref or not model_ref:
        raise ValueError(
            f"backbone_implementation='remote', but the config of {name_or_path!r} names no remote code for AutoConfig and "
            f"{family.auto_class} in its auto_map ({auto_map}); use the native port (backbone_implementation='native')."
        )
    load = dict(revision=revision, **hub_kwargs)
    classes = get_class_from_dynamic_module(config_ref, name_or_path, **load), get_class_from_dynamic_module(model_ref, name_or_path, **load)
    _reregister_native(family)  # published code may register itself with the Auto classes on import (LLaDA's does)
    return classes


def _reregister_native(family: BackboneFamily) -> None:
    """Register the family's native classes with the Auto classes again, so that they keep serving its model_type."""
    import importlib

    import transformers

    module_name, class_name = family.native_class.rsplit(".", 1)
    model_cls = getattr(importlib.import_module(module_name), class_name)
    AutoConfig.register(model_cls.config_class.model_type, model_cls.config_class, exist_ok=True)
    getattr(transformers, family.auto_class).register(model_cls.config_class, model_cls, exist_ok=True)


def backbone_from_config(
    config: PrismConfig, family: BackboneFamily, trust_remote_code: Optional[bool] = None,
    backbone_implementation: str = "native", **config_kwargs,
) -> PreTrainedModel:
    """Build an empty backbone of the recorded architecture (its weights come from the PRISM checkpoint).

    ``config_kwargs`` go to the backbone class's ``from_config`` (``attn_implementation``, ...), except
    ``low_cpu_mem_usage`` and ``use_safetensors``, which describe a backbone weight file that this layout has not: the
    backbone is built once and filled once from ``model.safetensors``.
    """
    import transformers

    if not config.backbone_config:
        raise ValueError("PrismConfig.backbone_config is empty; cannot rebuild the backbone.")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for name in _STORED_BACKBONE_NO_OPS:
        config_kwargs.pop(name, None)
    backbone_dict = dict(config.backbone_config)
    model_type = backbone_dict.pop("model_type", config.backbone_family)
    auto_cls = getattr(transformers, family.auto_class)
    if model_type in CONFIG_MAPPING and not uses_remote_code(family, trust_remote_code, backbone_implementation):
        return _build(auto_cls.from_config, AutoConfig.for_model(model_type, **backbone_dict), **config_kwargs)
    # A remote-code family: its config class lives with the backbone reference, not in transformers.
    reference = config.backbone_name_or_path
    if reference is None:
        raise ValueError(
            f"Cannot rebuild a backbone of model_type={model_type!r}: transformers does not know it and the checkpoint "
            "records no backbone reference to fetch its code from. Register its config and model classes with "
            "AutoConfig/AutoModel first, or pass backbone= to from_pretrained."
        )
    if not trust_remote_code:
        raise ValueError(
            f"Rebuilding the {model_type!r} backbone needs its remote code from {reference!r}: pass trust_remote_code=True "
            "to from_pretrained if you trust it (it is never turned on for you)."
        )
    if family.native_class is not None:
        from transformers import PretrainedConfig

        raw_config, _ = PretrainedConfig.get_config_dict(reference, revision=config.backbone_revision)
        config_cls, model_cls = _remote_code_classes(reference, raw_config, family, revision=config.backbone_revision)
        backbone_config = config_cls.from_pretrained(reference, revision=config.backbone_revision)
    else:
        model_cls = None
        backbone_config = AutoConfig.from_pretrained(reference, revision=config.backbone_revision, trust_remote_code=True)
    for key, value in backbone_dict.items():
        if not key.startswith("_") and key not in ("auto_map", "architectures", "transformers_version"):
            setattr(backbone_config, key, value)
    if model_cls is not None:
        return _build(model_cls._from_config, backbone_config, **config_kwargs)
    return _build(auto_cls.from_config, backbone_config, trust_remote_code=True, **config_kwargs)


def _build(from_config: Callable[..., PreTrainedModel], config: Any, **kwargs: Any) -> PreTrainedModel:
    """``from_config(config, **kwargs)``; an argument the backbone's class does not take is named with the layout."""
    try:
        return from_config(config, **kwargs)
    except TypeError as err:
        if not kwargs or "unexpected keyword argument" not in str(err):
            raise
        raise TypeError(
            f"{sorted(kwargs)}: this checkpoint stores its backbone's weights, so the backbone is built from its config "
            f"with `from_config`, which refused them ({err}). Arguments that apply here: attn_implementation, "
            "experts_implementation, dtype, a single device (device_map / device); low_cpu_mem_usage and use_safetensors "
            "change nothing."
        ) from err

def try_load_tokenizer(name_or_path: str, revision=None, trust_remote_code=False):
    """The tokenizer next to a backbone, or `None` (it is only asked for a mask token)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as err:  # a missing tokenizer only matters if no mask id is found; that error says so
        logger.info("No tokenizer found at %s (%s); relying on the config for the mask token.", name_or_path, err)
        return None


def resolve_backbone(
    backbone: Union[str, os.PathLike, nn.Module], *, revision: Optional[str] = None, trust_remote_code: bool = False,
    backbone_implementation: str = "native", dtype: Any = None, **load_kwargs: Any,
) -> Tuple[PreTrainedModel, Optional[str], Optional[str]]:
    """The backbone ``from_backbone`` wraps: loaded from a Hub id or a path, or a model already loaded.

    Returns:
        `tuple`: the model, the reference recorded in the config (the Hub id or path, else the model's
        ``config._name_or_path``, else `None`) and the revision (the resolved commit when the Hub gave one).
    """
    if isinstance(backbone, (str, os.PathLike)):
        model = load_backbone(str(backbone), revision=revision, trust_remote_code=trust_remote_code,
                              backbone_implementation=backbone_implementation, dtype=dtype, **load_kwargs)
        return model, str(backbone), revision or getattr(model.config, "_commit_hash", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone must be a Hub id, a local path or a loaded model; got {type(backbone).__name__}.")
    if load_kwargs or dtype is not None:
        raise ValueError(
            f"dtype / loading arguments {sorted(load_kwargs) + (['dtype'] if dtype is not None else [])} only apply "
            "when backbone is a Hub id or a path; cast or place the loaded model yourself."
        )
    if is_peft_model(backbone):
        raise ValueError("Pass the plain backbone and call .enable_lora(...) on the PRISM model instead of a PeftModel.")
    config = getattr(backbone, "config", None)
    reference = getattr(config, "_name_or_path", "") or None
    return backbone, reference, revision or getattr(config, "_commit_hash", None)


# ----- saving ---------------------------------------------------------------------------------------------------
def save_checkpoint(model: Any, save_directory: Union[str, os.PathLike],
                    state_dict: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Write ``model`` (a [`PrismForMaskedDiffusion`]) in the layout above; returns the tensors written.

    Args:
        model ([`PrismForMaskedDiffusion`]): The model; its config records what was saved.
        save_directory (`str` or `os.PathLike`): The folder (created if missing). A stale ``adapter/`` of an earlier
            LoRA save is removed when the model has none.
        state_dict (`dict`, *optional*): Weights to save instead of ``model.state_dict()`` (e.g. gathered by DeepSpeed).
    """
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    is_lora = is_peft_model(model.backbone)
    if is_lora:
        config.backbone_training = "lora"
    # Trained backbone weights are always saved; a backbone that can be loaded again by reference is not duplicated.
    saves_backbone = config.backbone_name_or_path is None or config.backbone_training == "full"
    to_save = _tensors_to_save(model.state_dict() if state_dict is None else state_dict, saves_backbone)
    (save_directory / CHECKPOINT_WEIGHTS_NAME).unlink(missing_ok=True)
    adapter_dir = save_directory / ADAPTER_DIRNAME
    if adapter_dir.is_dir() and not is_lora:
        shutil.rmtree(adapter_dir)  # a stale adapter from an earlier save would be loaded back
    save_file(to_save, str(save_directory / CHECKPOINT_WEIGHTS_NAME),
              metadata={"format": "pt", "prism_format_version": str(PRISM_FORMAT_VERSION)})
    if is_lora:
        model.backbone.save_pretrained(str(adapter_dir))
    config.backbone_weights_saved = saves_backbone
    config.backbone_dtype = dtype_name(parameter_dtype(model._raw_backbone()))
    config.architectures = [type(model).__name__]
    config.save_pretrained(save_directory)
    (save_directory / "README.md").write_text(model_card(config, list(to_save)), encoding="utf-8")
    return to_save


def _tensors_to_save(state_dict: Dict[str, torch.Tensor], saves_backbone: bool) -> Dict[str, torch.Tensor]:
    """The head (and the backbone when it is saved), each storage once: tied weights are restored on loading."""
    to_save, seen = {}, set()
    for key, tensor in state_dict.items():
        if key.startswith("backbone.") and not saves_backbone:
            continue
        storage = _storage_key(tensor)
        if storage is not None and storage in seen:
            continue
        seen.add(storage)
        to_save[key] = tensor.detach().contiguous().cpu()
    return to_save


# ----- loading ---------------------------------------------------------------------------------------------------
def load_checkpoint(
    model_cls: type,
    pretrained_model_name_or_path: Union[str, os.PathLike],
    *,
    backbone: Union[None, str, os.PathLike, nn.Module] = None,
    trust_remote_code: Optional[bool] = None,
    backbone_implementation: Optional[str] = None,
    dtype: Any = None,
    revision: Optional[str] = None,
    is_trainable: bool = False,
    device: Union[None, str, torch.device] = None,
    **kwargs: Any,
) -> Any:
    """Read a checkpoint written by [`save_checkpoint`] into a new ``model_cls`` (what
    ``PrismForMaskedDiffusion.from_pretrained`` does; its docstring describes every argument).

    The keyword arguments this function consumes are its own, the Hub arguments (``cache_dir``, ``token``,
    ``local_files_only``, ``force_download``, which also reach a backbone loaded by reference), ``subfolder``,
    ``torch_dtype`` (transformers 4's ``dtype``) and the Auto classes' internal ones. Every other keyword argument goes
    on to the backbone: to its ``from_pretrained`` when it is loaded by reference, to its ``from_config`` when its
    weights are stored here.
    """
    dtype = merge_dtype_alias(kwargs, dtype)
    for internal in _INTERNAL_KWARGS:
        kwargs.pop(internal, None)
    checkpoint_kwargs = {k: kwargs.pop(k) for k in (*HUB_KWARGS, "subfolder") if k in kwargs}
    hub_kwargs = {k: v for k, v in checkpoint_kwargs.items() if k != "subfolder"}
    backbone_kwargs = {k: v for k, v in kwargs.items() if v is not None}
    folder = resolve_checkpoint_folder(pretrained_model_name_or_path, revision=revision, **checkpoint_kwargs)
    raw = read_checkpoint_config(folder, pretrained_model_name_or_path)
    config = PrismConfig.from_dict(raw)
    implementation = backbone_implementation or raw.get("backbone_implementation", "native")
    check_implementation(implementation, trust_remote_code)
    stored_backbone = stores_backbone_weights(raw)
    if dtype is None or (dtype == "auto" and stored_backbone):
        # The recorded dtype; None for older checkpoints (transformers' default). For a backbone stored here,
        # "auto" means the dtype it was stored in, which is the recorded one.
        dtype = raw.get("backbone_dtype") or (None if dtype == "auto" else dtype)
    if stored_backbone and backbone is None:
        device = single_device(backbone_kwargs.pop("device_map", None), device)
    backbone_model = _checkpoint_backbone(config, backbone, stored_backbone, implementation, trust_remote_code, dtype,
                                          hub_kwargs, backbone_kwargs)
    if (folder / ADAPTER_DIRNAME).is_dir():
        from peft import PeftModel

        backbone_model = PeftModel.from_pretrained(backbone_model, str(folder / ADAPTER_DIRNAME), is_trainable=is_trainable)
    model = model_cls(config, backbone=backbone_model)
    state = load_checkpoint_weights(folder / CHECKPOINT_WEIGHTS_NAME)
    head_dtypes = {tensor.dtype for key, tensor in state.items() if key.startswith("quality_head.")}
    if len(head_dtypes) == 1:
        model.quality_head.to(dtype=head_dtypes.pop())
    model.quality_head.to(device=model._hidden_state_device())
    load_state_into(model, state, stored_backbone=stored_backbone)
    if device is not None:
        model.to(device)
    model.config.backbone_implementation = implementation
    model.config.backbone_dtype = dtype_name(parameter_dtype(model._raw_backbone()))
    return model.eval()


def _checkpoint_backbone(
    config: PrismConfig, backbone: Any, stored_backbone: bool, implementation: str, trust_remote_code: Optional[bool],
    dtype: Any, hub_kwargs: Dict[str, Any], backbone_kwargs: Dict[str, Any],
) -> nn.Module:
    """The backbone a checkpoint builds on: the one passed in, one built from the stored config (its weights come
    from ``model.safetensors``), or the recorded reference loaded again."""
    family = get_family(config.backbone_family)
    if isinstance(backbone, nn.Module):
        if backbone_kwargs:
            raise ValueError(f"Loading arguments {sorted(backbone_kwargs)} do not apply to a loaded backbone= model.")
        return backbone
    if backbone is not None:
        return load_backbone(str(backbone), trust_remote_code=bool(trust_remote_code), backbone_implementation=implementation,
                             dtype=dtype, **hub_kwargs, **backbone_kwargs)
    if stored_backbone:
        model = backbone_from_config(config, family, trust_remote_code=trust_remote_code,
                                     backbone_implementation=implementation, **backbone_kwargs)
        torch_dtype = as_torch_dtype(dtype)
        return model if torch_dtype is None else model.to(dtype=torch_dtype)
    if uses_remote_code(family, config.backbone_trust_remote_code, implementation) and trust_remote_code is not True:
        raise ValueError(
            f"The backbone {config.backbone_name_or_path!r} of this checkpoint runs remote code. Pass "
            "trust_remote_code=True to from_pretrained if you trust it (it is never turned on for you)."
        )
    try:
        return load_backbone(config.backbone_name_or_path, revision=config.backbone_revision,
                             trust_remote_code=bool(trust_remote_code), backbone_implementation=implementation, dtype=dtype,
                             **hub_kwargs, **backbone_kwargs)
    except (OSError, ValueError) as err:
        raise OSError(
            f"Cannot load the backbone {config.backbone_name_or_path!r} (revision {config.backbone_revision!r}) that "
            f"this PRISM checkpoint builds on: {err}\nIf you are offline, download the backbone first (or unset "
            "HF_HUB_OFFLINE), or pass backbone=<a loaded model or a local folder> to from_pretrained."
        ) from err


def load_state_into(model: nn.Module, state: Dict[str, torch.Tensor], stored_backbone: bool) -> None:
    """Copy a checkpoint's tensors into ``model`` (in place, keeping each parameter's dtype and device).

    Args:
        model ([`PrismForMaskedDiffusion`]): The model.
        state (`dict`): The tensors of ``model.safetensors``.
        stored_backbone (`bool`): Whether the checkpoint holds the backbone's weights; if not, backbone tensors may be
            missing (and LoRA tensors always may: they live in ``adapter/``). Tensors tied to a stored one may be
            missing too. Any other missing or unknown key is an error.
    """
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(
            f"Checkpoint weights do not match this model: unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
        )
    stored = {_storage_key(own[key]) for key in state} - {None}
    missing = [
        key for key, tensor in own.items()
        if key not in state and _storage_key(tensor) not in stored
        and not (key.startswith("backbone.") and (not stored_backbone or "lora_" in key))
    ]
    if missing:
        raise ValueError(f"Checkpoint is missing weights {missing[:5]}{'...' if len(missing) > 5 else ''}.")
    with torch.no_grad():
        params = dict(model.named_parameters(remove_duplicate=False))
        buffers = dict(model.named_buffers(remove_duplicate=False))
        for key, value in state.items():
            target = params.get(key, buffers.get(key))
            if target is None:
                raise ValueError(f"Checkpoint key {key!r} is neither a parameter nor a buffer of the model.")
            target.copy_(value.to(dtype=target.dtype, device=target.device))


def restore_training_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike],
                                argument: str = "resume_from_checkpoint") -> str:
    """Reload a checkpoint written by ``save_pretrained`` into a model being trained, in place: the head, the backbone
    when it was stored, and the weights of the LoRA adapter in ``adapter/``.

    Args:
        model ([`PrismForMaskedDiffusion`]): Set up as in the run that wrote the checkpoint (same
            ``backbone_training``, the same adapter).
        checkpoint (`str` or `os.PathLike`): The checkpoint folder.
        argument (`str`): The caller's argument name, for messages.

    Returns:
        `str`: the checkpoint's ``backbone_training``.
    """
    folder = Path(checkpoint)
    weights = folder / CHECKPOINT_WEIGHTS_NAME
    if not weights.is_file() or not (folder / "config.json").is_file():
        raise ValueError(
            f"{argument}={str(checkpoint)!r} is not a PRISM checkpoint: expected config.json and "
            f"{CHECKPOINT_WEIGHTS_NAME} written by PrismTrainer / save_pretrained."
        )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    saved_mode = config.get("backbone_training")
    if saved_mode != model.config.backbone_training:
        raise ValueError(
            f"{argument}={str(checkpoint)!r} was saved with backbone_training={saved_mode!r} but the model is set up for "
            f"{model.config.backbone_training!r}; resume with the same mode (and peft_config)."
        )
    load_state_into(model, load_checkpoint_weights(weights), stored_backbone=stores_backbone_weights(config))
    adapter_dir = folder / ADAPTER_DIRNAME
    if adapter_dir.is_dir():
        if not is_peft_model(model.backbone):
            raise ValueError(
                f"{argument}={str(checkpoint)!r} holds a LoRA adapter but the model has none; pass the same peft_config "
                "as in the interrupted run."
            )
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(model.backbone, load_peft_weights(str(adapter_dir), device="cpu"))
    return saved_mode


# ----- the model card ---------------------------------------------------------------------------------------
def model_card(config: PrismConfig, saved_keys) -> str:
    """The ``README.md`` written next to the weights: what the checkpoint holds and how to load it."""
    base = config.backbone_name_or_path
    n_backbone = sum(k.startswith("backbone.") for k in saved_keys)
    contents = {
        "full": "the full fine-tuned backbone weights and the quality head",
        "lora": "the LoRA adapter (adapter/) and the quality head",
        "frozen": "the quality head only (the backbone is unchanged)",
    }[config.backbone_training]
    if base is None:
        contents = "the full backbone weights (no Hub reference) and the quality head"
    lines = [
        "---",
        "library_name: prism_hf",
        "tags:",
        "- prism",
        "- masked-diffusion",
        "- self-correction",
    ]
    if base:
        lines.append(f"base_model: {base}")
    lines += [
        "---",
        "",
        "# PRISM self-correcting masked diffusion model",
        "",
        "A [PRISM](https://arxiv.org/abs/2510.01384) checkpoint made with `prism_hf`: a masked diffusion backbone plus a "
        "per-token quality head that estimates Pr[token is right | rest of the sequence], used at inference to remask "
        "and revise low-quality tokens.",
        "",
        f"- Backbone: `{base or 'stored in this checkpoint'}`" + (f" (revision `{config.backbone_revision}`)" if config.backbone_revision else ""),
        f"- Backbone family: `{config.backbone_family}`; mask token id {config.mask_token_id}",
        f"- Backbone training: `{config.backbone_training}`",
        f"- Quality head: `{config.head_type}` {json.dumps(config.head_kwargs) if config.head_kwargs else ''}".rstrip(),
        f"- This checkpoint stores {contents} ({len(saved_keys)} tensors, {n_backbone} of them backbone tensors).",
    ]
    if config.recipe:
        lines += ["", "## Training recipe", "", "```json", json.dumps(config.recipe, indent=2, sort_keys=True, default=str), "```"]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from prism_hf import PrismForMaskedDiffusion",
        "",
        "model = PrismForMaskedDiffusion.from_pretrained(\"<this repo or folder>\"" + (", trust_remote_code=True" if config.backbone_trust_remote_code else "") + ")",
        "```",
        "",
    ]
    return "\n".join(lines)
