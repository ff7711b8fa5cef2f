"""Metrics for unconditional text generation: Gen PPL, unigram entropy, MAUVE, and the metric-versus-NFE plot.

These are the three numbers the PRISM paper (and MDLM / ReMDM before it) report for unconditional
OpenWebText samples:

* **Gen PPL** ([`generative_perplexity`]): the perplexity of the samples under a separate causal LM
  (GPT-2 large by default). The samples are decoded to text with the generating model's tokenizer and
  re-tokenised with the evaluation model's tokenizer, so any causal LM can judge any sampler. Lower is
  better, but a degenerate, repetitive sample also scores low: read it next to the entropy.
* **Unigram entropy** ([`unigram_entropy`]): the entropy (nats) of the empirical token distribution of each
  sample, averaged over samples. Repetitive samples have low entropy (about 5.6 nats for 1024-token
  OpenWebText samples from a good model).
* **MAUVE** ([`mauve_score`]): the divergence-frontier score of the ``mauve-text`` library between the
  samples and held-out human text, on features of a given model (the last-layer hidden state of the last
  token, GPT-2 large by default, as in the library). Higher is better.

[`plot_metrics_vs_nfe`] draws one panel per metric with one line per sampling rule against the number of
function evaluations (NFE): the shape of the paper's Figure 4.

Everything here runs offline on tiny in-process models; the defaults reproduce the paper's setting when
the Hub is reachable. ``mauve-text`` (with ``faiss-cpu`` and ``scikit-learn``) is only imported by
[`mauve_score`].
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.families import max_length_of

__all__ = [
    "DEFAULT_EVAL_MODEL",
    "GenerativePerplexityOutput",
    "MauveOutput",
    "load_causal_lm",
    "check_causal_lm",
    "decode_samples",
    "generative_perplexity",
    "per_sample_unigram_entropy",
    "unigram_entropy",
    "text_features",
    "mauve_score",
    "plot_metrics_vs_nfe",
]

DEFAULT_EVAL_MODEL = "gpt2-large"

ModelOrName = Union[str, os.PathLike, nn.Module]


# ----- loading and checking the evaluation model ---------------------------------------------------------
def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _vocab_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    value = getattr(config, "vocab_size", None)
    if isinstance(value, int) and value > 0:
        return value
    return model.get_input_embeddings().weight.shape[0]


@torch.no_grad()
def check_causal_lm(model: nn.Module, *, argument: str = "eval_model") -> None:
    """Raise a `ValueError` unless ``model`` is a causal (left-to-right) language model.

    The test is the definition: the logits at a position must not change when a later token changes. A
    masked or diffusion LM (BERT, MDLM, LLaDA, a [`PrismForMaskedDiffusion`]) sees the whole sequence and
    fails it, so its "perplexity" would be meaningless. Encoder-decoder models are rejected by their config.

    Args:
        model (`torch.nn.Module`): A loaded model whose forward takes ``input_ids`` and returns ``logits``
            of shape ``(batch_size, sequence_length, vocab_size)``.
        argument (`str`): The argument name to cite in the error message.
    """
    name = type(model).__name__
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"{argument}={name} is an encoder-decoder model; Gen PPL needs a causal (decoder-only) language model "
            "such as 'gpt2-large' or any AutoModelForCausalLM."
        )
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator().manual_seed(0)
        vocab = _vocab_size(model)
        probe = torch.randint(0, vocab, (2, 8), generator=generator)
        changed = probe.clone()
        changed[:, -1] = (probe[:, -1] + 1) % vocab
        batch = torch.cat([probe, changed]).to(_model_device(model))
        try:
            outputs = model(input_ids=batch)
        except TypeError as error:
            raise ValueError(f"{argument}={name} cannot be called as model(input_ids=...): {error}") from error
        logits = getattr(outputs, "logits", None)
        if logits is None and isinstance(outputs, (tuple, list)):
            logits = outputs[0]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            raise ValueError(
                f"{argument}={name} does not return logits of shape (batch, seq_len, vocab); Gen PPL needs a causal "
                "language model (AutoModelForCausalLM), not a base model or a classifier."
            )
    finally:
        model.train(was_training)
    before, after = logits[:2, :-1].float(), logits[2:, :-1].float()
    if not torch.allclose(before, after, rtol=1e-3, atol=1e-4):
        raise ValueError(
            f"{argument}={name} is not a causal language model: its logits at earlier positions change when a later "
            "token changes, so it reads the whole sequence (a masked or diffusion LM). Gen PPL must be measured under "
            "a left-to-right model such as 'gpt2-large' (any AutoModelForCausalLM)."
        )


def load_causal_lm(
    model: ModelOrName = DEFAULT_EVAL_MODEL,
    tokenizer: Any = None,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
    revision: Optional[str] = None,
    trust_remote_code: bool = False,
    argument: str = "eval_model",
) -> Tuple[nn.Module, Any]:
    """Load (or accept) the causal LM that judges samples, with its tokenizer, and check it is causal.

    Args:
        model (`str`, `os.PathLike` or `torch.nn.Module`): A Hub id or local path (loaded with
            `AutoModelForCausalLM`), or a loaded model. Default ``"gpt2-large"`` (the paper's judge).
        tokenizer (*optional*): The evaluation model's tokenizer. Required with a loaded model; loaded with
            `AutoTokenizer` from the same id or path otherwise.
        device (*optional*): Where to put a model loaded by name (a loaded model stays where it is).
        dtype (*optional*): Load dtype of a model loaded by name.
        revision (`str`, *optional*): Hub revision of a model loaded by name.
        trust_remote_code (`bool`): Passed to `from_pretrained`.
        argument (`str`): The argument name to cite in error messages.

    Returns:
        `(model, tokenizer)` with the model in eval mode.
    """
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        name = str(model)
        config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
        if getattr(config, "is_encoder_decoder", False):
            raise ValueError(
                f"{argument}={name!r} is an encoder-decoder model (model_type={config.model_type!r}); Gen PPL needs a "
                "causal (decoder-only) language model such as 'gpt2-large'."
            )
        try:
            loaded = AutoModelForCausalLM.from_pretrained(
                name, revision=revision, trust_remote_code=trust_remote_code, **({"dtype": dtype} if dtype else {})
            )
        except ValueError as error:
            raise ValueError(
                f"{argument}={name!r} (model_type={config.model_type!r}) cannot be loaded as a causal language model "
                f"(AutoModelForCausalLM): {error}. Pass a causal LM such as 'gpt2-large'."
            ) from error
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
        if device is not None:
            loaded = loaded.to(device)
        model = loaded
    elif isinstance(model, nn.Module):
        if tokenizer is None:
            raise ValueError(
                f"{argument} is a loaded {type(model).__name__} but no tokenizer was given; pass the evaluation model's "
                "tokenizer (the samples are re-tokenised with it)."
            )
    else:
        raise TypeError(f"{argument} must be a Hub id, a local path or a loaded model; got {type(model).__name__}.")
    check_causal_lm(model, argument=argument)
    return model.eval(), tokenizer


# ----- samples -> text ------------------------------------------------------------------------------------
def decode_samples(
    token_ids: Union[torch.Tensor, Sequence[Sequence[int]]],
    tokenizer: Any,
    *,
    mask_token_id: Optional[int] = None,
    skip_special_tokens: bool = True,
) -> List[str]:
    """Decode generated token ids to text with the *generating* model's tokenizer.

    This is the first half of re-tokenisation: the evaluation model never sees the generator's ids.

    Args:
        token_ids (`torch.LongTensor` of shape `(num_samples, sequence_length)` or a list of id lists): Samples.
        tokenizer: The generating model's tokenizer.
        mask_token_id (`int`, *optional*): Positions still holding the mask id (a sampler stopped early) are
            dropped before decoding; MDLM's mask id (the last vocabulary id) is not a tokenizer id at all.
        skip_special_tokens (`bool`): Passed to ``tokenizer.batch_decode``.
    """
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() != 2:
            raise ValueError(f"token_ids must have shape (num_samples, seq_len); got {tuple(token_ids.shape)}.")
        rows = token_ids.tolist()
    else:
        rows = [list(map(int, row)) for row in token_ids]
    if mask_token_id is not None:
        rows = [[t for t in row if t != mask_token_id] for row in rows]
    return tokenizer.batch_decode(rows, skip_special_tokens=skip_special_tokens)


def _check_texts(texts: Any, argument: str) -> List[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{argument} must be a list of strings; got {type(texts).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{argument} is empty; pass at least one sample.")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(
            f"{argument}[{bad}] is a {type(texts[bad]).__name__}, not a string; decode token ids first "
            "(prism_hf.evaluation.text_metrics.decode_samples)."
        )
    return texts


def _tokenize(tokenizer: Any, texts: List[str], max_length: Optional[int]) -> List[List[int]]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if max_length is not None:
        ids = [row[:max_length] for row in ids]
    return ids


def _pad(rows: List[List[int]], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to ``(B, L)``; the pad value is irrelevant since it is masked out everywhere."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = max(int(lengths.max()), 1)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):  # host-side packing of a ragged list, not a model step
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    attention_mask = torch.arange(width)[None, :] < lengths[:, None]
    return ids.to(device), attention_mask.long().to(device)


# ----- generative perplexity ---------------------------------------------------------------------------------
@dataclass
class GenerativePerplexityOutput:
    """Result of [`generative_perplexity`].

    Args:
        gen_ppl (`float`): ``exp`` of the mean token NLL over all scored tokens of all samples (the corpus
            figure MDLM, ReMDM and PRISM report).
        nll (`float`): That mean token NLL, in nats.
        num_tokens (`int`): Number of scored tokens.
        per_sample_ppl (`List[float]`): Perplexity of each sample (``nan`` for a sample with no scored token).
    """

    gen_ppl: float
    nll: float
    num_tokens: int
    per_sample_ppl: List[float] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def generative_perplexity(
    texts: Sequence[str],
    eval_model: ModelOrName = DEFAULT_EVAL_MODEL,
    eval_tokenizer: Any = None,
    *,
    batch_size: int = 8,
    max_length: Optional[int] = None,
    context_length: Optional[int] = None,
    first_eos_only: bool = True,
    device: Union[str, torch.device, None] = None,
    trust_remote_code: bool = False,
) -> GenerativePerplexityOutput:
    """Perplexity of generated text under a causal LM (Gen PPL).

    The texts are tokenised with the evaluation model's tokenizer (no special tokens added), cut into
    windows of the evaluation model's context length (1024 for GPT-2) that are scored independently, and
    every token after the first of its window is scored by ``-log p(token | window prefix)``. With
    ``first_eos_only`` (MDLM's convention) an end-of-text token counts once: the first one in a window is
    scored, later ones are not (a sample that ends early is padded with EOS by some samplers).

    Args:
        texts (`List[str]`): Decoded samples (see [`decode_samples`]).
        eval_model (`str`, path or `torch.nn.Module`): The judge: a causal LM by name (default ``"gpt2-large"``)
            or loaded. A model that is not causal raises a `ValueError`.
        eval_tokenizer (*optional*): Its tokenizer (required when ``eval_model`` is a loaded model).
        batch_size (`int`): Samples per forward pass.
        max_length (`int`, *optional*): Truncate each re-tokenised sample to this many tokens.
        context_length (`int`, *optional*): Window size; default the model's ``n_positions`` /
            ``max_position_embeddings``.
        first_eos_only (`bool`): Score only the first EOS token of a window (see above).
        device (*optional*): Device of a model loaded by name.
        trust_remote_code (`bool`): For a model loaded by name.

    Returns:
        [`GenerativePerplexityOutput`].
    """
    texts = _check_texts(texts, "texts")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length={max_length!r} must be an integer >= 2 (one context token plus one scored token) or None.")
    model, tokenizer = load_causal_lm(eval_model, eval_tokenizer, device=device, trust_remote_code=trust_remote_code)
    window = context_length or max_length_of(model) or 1024
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"context_length={context_length!r} must be an integer >= 2.")
    model_device = _model_device(model)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    rows = _tokenize(tokenizer, texts, max_length)

    nll_per_sample = torch.zeros(len(rows), dtype=torch.float64)
    count_per_sample = torch.zeros(len(rows), dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        ids, attention = _pad(rows[start : start + batch_size], model_device)
        for chunk_ids, chunk_attention in zip(ids.split(window, dim=1), attention.split(window, dim=1)):
            if chunk_ids.shape[1] < 2:
                continue
            logits = model(input_ids=chunk_ids, attention_mask=chunk_attention).logits
            targets = chunk_ids[:, 1:]
            token_nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
            weight = chunk_attention[:, 1:].bool()
            if first_eos_only and eos_id is not None:
                is_eos = (chunk_ids == eos_id) & chunk_attention.bool()
                first_eos = is_eos & (is_eos.long().cumsum(dim=1) == 1)
                weight = weight & (~is_eos[:, 1:] | first_eos[:, 1:])
            weight = weight.to(token_nll.dtype)
            nll_per_sample[start : start + chunk_ids.shape[0]] += (token_nll * weight).sum(dim=1).double().cpu()
            count_per_sample[start : start + chunk_ids.shape[0]] += weight.sum(dim=1).double().cpu()

    total_tokens = int(count_per_sample.sum())
    if total_tokens == 0:
        raise ValueError(
            "No token could be scored: every sample re-tokenises to fewer than 2 tokens under the evaluation tokenizer. "
            "Check that the samples were decoded to text (decode_samples) and are not empty."
        )
    mean_nll = float(nll_per_sample.sum() / total_tokens)
    per_sample = torch.where(count_per_sample > 0, (nll_per_sample / count_per_sample.clamp(min=1)).exp(), torch.nan)
    return GenerativePerplexityOutput(
        gen_ppl=math.exp(mean_nll), nll=mean_nll, num_tokens=total_tokens, per_sample_ppl=per_sample.tolist()
    )


# ----- unigram entropy ---------------------------------------------------------------------------------------
def _as_padded_ids(token_ids: Union[torch.Tensor, Sequence[Sequence[int]]]) -> torch.Tensor:
    """``(B, L)`` long tensor with ``-1`` where a ragged row has no token."""
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() != 2:
            raise ValueError(f"token_ids must have shape (num_samples, seq_len); got {tuple(token_ids.shape)}.")
        if token_ids.is_floating_point():
            raise TypeError(f"token_ids must hold integer ids; got dtype={token_ids.dtype}.")
        return token_ids.long()
    rows = [torch.as_tensor(list(row), dtype=torch.long) for row in token_ids]
    if not rows:
        raise ValueError("token_ids is empty; pass at least one sample.")
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1)


def per_sample_unigram_entropy(
    token_ids: Union[torch.Tensor, Sequence[Sequence[int]]],
    *,
    ignore_token_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Entropy (nats) of each sample's empirical token distribution.

    For a sample with token counts ``c_v`` over ``n`` tokens, ``H = -sum_v (c_v / n) log(c_v / n)``. Computed for
    the whole batch at once by sorting each row and counting runs (no loop over samples, no ``(B, V)`` table).

    Args:
        token_ids (`torch.LongTensor` of shape `(num_samples, sequence_length)` or a list of id lists): Samples
            in the generating model's ids. Negative ids are treated as absent (ragged rows).
        ignore_token_ids (`Sequence[int]`): Ids left out of the counts (e.g. padding or EOS).

    Returns:
        `torch.FloatTensor` of shape `(num_samples,)`; ``nan`` for a sample with no counted token.
    """
    ids = _as_padded_ids(token_ids)
    valid = ids >= 0
    for ignored in ignore_token_ids:
        valid &= ids != int(ignored)
    # Sort valid ids to the front of each row (invalid ones become a sentinel at the end).
    sentinel = int(ids.max().clamp(min=0)) + 1
    keyed = torch.where(valid, ids, torch.full_like(ids, sentinel))
    ordered, _ = keyed.sort(dim=1)
    ordered_valid = ordered != sentinel
    new_run = ordered_valid.clone()
    new_run[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]
    run_index = new_run.long().cumsum(dim=1) - 1  # run index of each valid position
    counts = torch.zeros(ids.shape, dtype=torch.float64)
    counts.scatter_add_(1, run_index.clamp(min=0), ordered_valid.double())
    totals = ordered_valid.sum(dim=1, keepdim=True).double()
    probs = counts / totals.clamp(min=1)
    entropy = torch.special.entr(probs).sum(dim=1)
    return torch.where(totals.squeeze(1) > 0, entropy, torch.nan).float()


def unigram_entropy(
    token_ids: Union[torch.Tensor, Sequence[Sequence[int]]],
    *,
    ignore_token_ids: Sequence[int] = (),
) -> float:
    """Average unigram entropy per sample (nats): the mean of [`per_sample_unigram_entropy`] over samples that
    have at least one counted token."""
    values = per_sample_unigram_entropy(token_ids, ignore_token_ids=ignore_token_ids)
    values = values[~values.isnan()]
    if values.numel() == 0:
        raise ValueError("unigram_entropy: no sample has a counted token (all empty or ignored).")
    return float(values.mean())


# ----- MAUVE -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def text_features(
    texts: Sequence[str],
    model: ModelOrName = DEFAULT_EVAL_MODEL,
    tokenizer: Any = None,
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    device: Union[str, torch.device, None] = None,
) -> np.ndarray:
    """MAUVE features: the last layer's hidden state at each text's last token (the ``mauve-text`` recipe).

    Args:
        texts (`List[str]`): Texts to embed.
        model (`str`, path or `torch.nn.Module`): The feature model (default ``"gpt2-large"``, loaded with
            `AutoModel`), or a loaded model whose forward accepts ``output_hidden_states=True``.
        tokenizer (*optional*): Its tokenizer (required with a loaded model).
        batch_size (`int`): Texts per forward pass.
        max_length (`int`): Truncate each text to this many tokens (MAUVE's default 1024), and never beyond the
            model's context length.
        device (*optional*): Device of a model loaded by name.

    Returns:
        `np.ndarray` of shape `(num_texts, hidden_size)`, float32.
    """
    texts = _check_texts(texts, "texts")
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length={max_length!r} must be a positive integer.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModel, AutoTokenizer

        name = str(model)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(name)
        model = AutoModel.from_pretrained(name)
        if device is not None:
            model = model.to(device)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a Hub id, a local path or a loaded model; got {type(model).__name__}.")
    elif tokenizer is None:
        raise ValueError(f"model is a loaded {type(model).__name__} but no tokenizer was given; pass its tokenizer.")
    model.eval()
    model_device = _model_device(model)
    max_length = min(max_length, max_length_of(model) or max_length)
    rows = _tokenize(tokenizer, texts, max_length)
    empty = [i for i, row in enumerate(rows) if not row]
    if empty:
        raise ValueError(f"texts[{empty[0]}] tokenises to no token; MAUVE features need at least one token per text.")
    features = []
    for start in range(0, len(rows), batch_size):
        ids, attention = _pad(rows[start : start + batch_size], model_device)
        outputs = model(input_ids=ids, attention_mask=attention, output_hidden_states=True)
        hidden = outputs.hidden_states[-1]
        last = attention.sum(dim=1) - 1
        features.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float().cpu())
    return torch.cat(features).numpy()


@dataclass
class MauveOutput:
    """Result of [`mauve_score`].

    Args:
        mauve (`float`): The MAUVE score in ``[0, 1]``; higher means the samples are closer to the reference.
        frontier_integral (`float`): The frontier integral (lower is closer).
        num_buckets (`int`): Number of k-means buckets used to quantise the features.
        num_p (`int`): Number of samples. num_q (`int`): Number of reference texts.
    """

    mauve: float
    frontier_integral: float
    num_buckets: int
    num_p: int
    num_q: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def mauve_score(
    p_texts: Optional[Sequence[str]] = None,
    q_texts: Optional[Sequence[str]] = None,
    *,
    p_features: Optional[np.ndarray] = None,
    q_features: Optional[np.ndarray] = None,
    feature_model: ModelOrName = DEFAULT_EVAL_MODEL,
    feature_tokenizer: Any = None,
    batch_size: int = 8,
    max_length: int = 1024,
    num_buckets: Union[int, str] = "auto",
    kmeans_num_redo: int = 5,
    kmeans_max_iter: int = 500,
    mauve_scaling_factor: float = 5.0,
    seed: int = 25,
    device: Union[str, torch.device, None] = None,
) -> MauveOutput:
    """MAUVE between generated samples (P) and held-out human text (Q), computed by the ``mauve-text`` library.

    Features come from ``feature_model`` via [`text_features`] unless given. The library quantises both sets
    with k-means (``num_buckets``; ``"auto"`` = a tenth of the smaller set) and integrates the divergence
    frontier.

    Args:
        p_texts, q_texts (`List[str]`, *optional*): Samples and reference texts (or give the features).
        p_features, q_features (`np.ndarray` of shape `(n, d)`, *optional*): Precomputed features.
        feature_model, feature_tokenizer: Model that embeds texts (default ``"gpt2-large"``) and its tokenizer.
        batch_size, max_length: Feature extraction settings (see [`text_features`]).
        num_buckets (`int` or ``"auto"``), kmeans_num_redo, kmeans_max_iter, mauve_scaling_factor, seed: Passed to
            ``mauve.compute_mauve``.
        device (*optional*): Device of a feature model loaded by name.
    """
    try:
        import mauve
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "mauve_score needs the `mauve-text` library (with faiss-cpu and scikit-learn): "
            "pip install 'prism-hf[text]' or pip install mauve-text faiss-cpu scikit-learn."
        ) from error

    def features_of(texts, features, side):
        if features is not None:
            if texts is not None:
                raise ValueError(f"Pass either {side}_texts or {side}_features, not both.")
            features = np.asarray(features, dtype=np.float32)
            if features.ndim != 2 or features.shape[0] == 0:
                raise ValueError(f"{side}_features must have shape (n, d) with n >= 1; got {features.shape}.")
            return features
        if texts is None:
            raise ValueError(f"Pass {side}_texts or {side}_features.")
        return text_features(
            texts, feature_model, feature_tokenizer, batch_size=batch_size, max_length=max_length, device=device
        )

    p = features_of(p_texts, p_features, "p")
    q = features_of(q_texts, q_features, "q")
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"p and q features have different widths ({p.shape[1]} vs {q.shape[1]}); use one feature model.")
    smallest = min(p.shape[0], q.shape[0])
    if num_buckets == "auto":
        buckets = max(2, int(round(smallest / 10)))
    elif isinstance(num_buckets, int) and not isinstance(num_buckets, bool) and num_buckets >= 2:
        buckets = num_buckets
    else:
        raise ValueError(f"num_buckets={num_buckets!r} must be 'auto' or an integer >= 2.")
    if smallest < buckets:
        raise ValueError(
            f"MAUVE with num_buckets={buckets} needs at least {buckets} samples and {buckets} reference texts; got "
            f"{p.shape[0]} and {q.shape[0]}. Use more samples (the paper uses 5000) or fewer buckets."
        )
    out = mauve.compute_mauve(
        p_features=p,
        q_features=q,
        num_buckets=buckets,
        kmeans_num_redo=kmeans_num_redo,
        kmeans_max_iter=kmeans_max_iter,
        mauve_scaling_factor=mauve_scaling_factor,
        seed=seed,
        verbose=False,
    )
    return MauveOutput(
        mauve=float(out.mauve),
        frontier_integral=float(out.frontier_integral),
        num_buckets=int(out.num_buckets),
        num_p=int(p.shape[0]),
        num_q=int(q.shape[0]),
    )


# ----- plot ----------------------------------------------------------------------------------------------------
METRIC_LABELS = {
    "mauve": "MAUVE (higher is better)",
    "gen_ppl": "Gen PPL (lower is better)",
    "entropy": "Unigram entropy (nats)",
}


def plot_metrics_vs_nfe(
    results: Sequence[Mapping[str, Any]],
    path: Union[str, os.PathLike],
    *,
    metrics: Sequence[str] = ("mauve", "gen_ppl", "entropy"),
    title: Optional[str] = None,
) -> str:
    """Plot each metric against NFE, one line per sampling rule (the shape of the PRISM paper's Figure 4).

    Args:
        results (`List[dict]`): Rows with a ``"rule"`` (str), an ``"nfe"`` (int) and the metric values; a row
            may lack a metric (e.g. MAUVE skipped), which is then not drawn.
        path (`str`): PNG file to write.
        metrics (`Sequence[str]`): One panel per metric, in this order.
        title (`str`, *optional*): Figure title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = list(results)
    if not rows:
        raise ValueError("results is empty; nothing to plot.")
    for i, row in enumerate(rows):
        if "rule" not in row or "nfe" not in row:
            raise ValueError(f"results[{i}] needs 'rule' and 'nfe' keys; got {sorted(row)}.")
    metrics = [m for m in metrics if any(row.get(m) is not None for row in rows)]
    if not metrics:
        raise ValueError("None of the requested metrics appears in results.")
    rules = list(dict.fromkeys(str(row["rule"]) for row in rows))
    nfes = sorted({int(row["nfe"]) for row in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for rule in rules:
            points = sorted(
                (int(row["nfe"]), float(row[metric]))
                for row in rows
                if str(row["rule"]) == rule and row.get(metric) is not None and not math.isnan(float(row[metric]))
            )
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=rule)
        if len(nfes) > 1 and nfes[0] > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(nfes)
        ax.set_xticklabels([str(n) for n in nfes])
        ax.set_xlabel("NFE")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
