"""Unconditional text generation with PRISM and its baselines at a list of NFEs: Gen PPL, entropy, MAUVE, plot.

The evaluation of the paper's text experiment (MDLM-170M on OpenWebText, sequence length 1024): for every
sampling rule and every NFE (number of model forwards = sampling steps), draw ``num_samples`` sequences from
an all-mask start with `PrismPipeline`, then measure

* Gen PPL under a causal LM (``--eval_model``, GPT-2 large by default; samples are decoded with the
  generator's tokenizer and re-tokenised with the judge's),
* the average unigram entropy per sample (on the generator's token ids),
* MAUVE against held-out text packed to the same length (``mauve-text``, features of ``--feature_model``,
  default the eval model).

Results go to ``<output_dir>/results.json`` (one row per rule x NFE), ``<output_dir>/metrics_vs_nfe.png``
(the shape of the paper's Figure 4) and, with ``--save_samples``, ``samples_<rule>_<nfe>.jsonl``.

With the Hub and a GPU (see docs/text.md):

    python examples/eval_text.py --config examples/configs/mdlm_owt_eval.yaml \\
        --model_name_or_path runs/prism-mdlm-owt

Offline on the tiny stand-ins (after ``examples/train_text.py --config examples/configs/mdlm_owt_tiny.yaml``):

    python examples/eval_text.py --config examples/configs/mdlm_owt_eval_tiny.yaml

Every rule draws tokens from the top-p 0.9 nucleus (``--top_p``, in the public samplers' sense:
``--top_p_mode mdlm`` keeps the tokens whose cumulative probability is at most ``top_p``), as the public OWT
evaluation does; ``--top_p 1.0`` samples from the whole posterior (this script's behaviour before).

Sampling rules (``--rules``) are named methods of the one preset table, `prism_hf.sampling.presets` (shared with the
Sudoku and code evaluations), on the text task's sampler settings ``TEXT_SAMPLER`` (random unmasking; PRISM's remask
counts ``r ~ Binomial(n_clean, min(eta, (1 - alpha_s) / alpha_t))`` with ``eta = 0.01``, only in the second half of
the steps: ``step_on=0.5``, steps 128 to 256 of 256, the public recipe). ``--rule_overrides`` (JSON, e.g.
``'{"prism": {"eta": 0.02, "step_on": 0.1}}'``) changes them or adds new names:

* ``prism``: remask the lowest-quality tokens (``'{"prism": {"step_on": 0.0}}'`` remasks at every step, as this
  script did before);
* ``vanilla``: no remasking (MDLM ancestral sampling);
* ``remdm-cap`` (eta 0.04, the PRISM paper's text baseline), ``remdm-rescale``, ``remdm-conf``, ``remdm-loop``
  (public ReMDM defaults);
* ``confidence-remask`` and ``random-remask``: PRISM's remask counts and window with the lowest-confidence or random
  tokens (ablations that isolate what the learned head adds);
* any other name of the table (``vanilla-confidence``, ...).

The earlier names ``remdm_cap``, ``remdm_rescale``, ``remdm_conf``, ``remdm_loop``, ``confidence`` and ``random``
still work, with a `FutureWarning`, until prism_hf 0.3.0; results and sample files keep the name you pass.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from prism_hf.sampling.presets import DEPRECATED_METHOD_NAMES, METHOD_PRESETS, get_method_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_text import load_text_dataset, pack_texts, parse_args  # noqa: E402

logger = logging.getLogger("eval_text")

#: The text task's sampler settings for the method presets (the paper's text recipe): random unmasking, and PRISM's
#: remask counts r ~ Binomial(n_clean, min(eta, (1 - alpha_s) / alpha_t)), eta 0.01, in the second half of the steps.
TEXT_SAMPLER: Dict[str, Any] = {"unmasking": "random", "remask_schedule": "binomial", "eta": 0.01, "step_on": 0.5}


@dataclass
class EvalArguments:
    """What to sample, how, and how to score it."""

    model_name_or_path: str = field(
        default="runs/prism-mdlm-owt",
        metadata={"help": "A PRISM checkpoint (train_text.py output) or a plain backbone (for rules without a head)."},
    )
    backbone_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Backbone code/config for a PRISM checkpoint of a remote-code backbone; default the one it recorded."},
    )
    tokenizer_name: Optional[str] = field(default=None, metadata={"help": "Generator tokenizer (None = the model folder's)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Only for remote-code backbones (MDLM is ported natively)."})
    dtype: str = field(default="float32", metadata={"help": "Generator dtype: float32, bfloat16 or float16."})
    device: Optional[str] = field(default=None, metadata={"help": "cuda, cpu, ... (default: cuda when available)."})
    rules: List[str] = field(
        default_factory=lambda: ["prism", "remdm-cap", "vanilla"],
        metadata={"help": f"Sampling rules: methods of prism_hf.sampling.presets ({list(METHOD_PRESETS)}) or names "
                          "defined in --rule_overrides."},
    )
    rule_overrides: Optional[str] = field(
        default=None, metadata={"help": "JSON {rule: {PrismScheduler kwargs}} changing or adding rules."}
    )
    nfes: List[int] = field(
        default_factory=lambda: [128, 256, 512, 1024, 2048, 4096],
        metadata={"help": "Numbers of sampling steps (model forwards) to evaluate; each must be >= 1."},
    )
    num_samples: int = field(default=5000, metadata={"help": "Samples per rule and NFE."})
    batch_size: int = field(default=64, metadata={"help": "Samples generated per pipeline call."})
    seq_length: Optional[int] = field(default=None, metadata={"help": "Tokens per sample (default: the model's length)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (1 = the posterior)."})
    top_p: Optional[float] = field(
        default=0.9, metadata={"help": "Nucleus filter for every rule (public OWT recipe: 0.9; 1.0 = off)."}
    )
    top_p_mode: str = field(
        default="mdlm",
        metadata={"help": "Which tokens the nucleus keeps: mdlm (the public samplers) or transformers.", "choices": ["mdlm", "transformers"]},
    )
    seed: int = field(default=0, metadata={"help": "Seed; every rule and NFE uses the same one."})
    skip_special_tokens: bool = field(
        default=False, metadata={"help": "Drop special tokens when decoding (MDLM keeps <|endoftext|>)."}
    )
    eval_model: str = field(default="gpt2-large", metadata={"help": "Causal LM that judges Gen PPL."})
    eval_tokenizer: Optional[str] = field(default=None, metadata={"help": "Its tokenizer (None = same as eval_model)."})
    eval_batch_size: int = field(default=8, metadata={"help": "Texts per forward of the judge / feature model."})
    mauve: bool = field(default=True, metadata={"help": "Compute MAUVE against held-out text."})
    feature_model: Optional[str] = field(default=None, metadata={"help": "MAUVE feature model (None = eval_model)."})
    reference_dataset_name: Optional[str] = field(
        default="Skylion007/openwebtext", metadata={"help": "Held-out text for MAUVE (ignored with --reference_files)."}
    )
    reference_dataset_config: Optional[str] = field(default=None, metadata={"help": "Its configuration."})
    reference_split: str = field(default="train", metadata={"help": "Its split."})
    reference_files: Optional[List[str]] = field(default=None, metadata={"help": "Local held-out text files."})
    reference_text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    reference_last_n: int = field(
        default=100_000, metadata={"help": "Read reference documents from the last N of the split (train_text.py holds them out); 0 = all."}
    )
    num_reference: Optional[int] = field(default=None, metadata={"help": "Reference blocks for MAUVE (None = num_samples)."})
    mauve_num_buckets: str = field(default="auto", metadata={"help": "k-means buckets: 'auto' (n/10) or an integer."})
    mauve_kmeans_num_redo: int = field(default=5, metadata={"help": "k-means restarts."})
    output_dir: str = field(default="runs/eval-text", metadata={"help": "Where results.json, the plot and samples go."})
    save_samples: bool = field(default=True, metadata={"help": "Write the decoded samples of every cell as JSONL."})

    def __post_init__(self):
        # Checked before anything is loaded, so a bad list fails in a second, not after an hour of sampling.
        if not self.nfes:
            raise ValueError("nfes is empty; pass at least one number of sampling steps, e.g. --nfes 128 256.")
        bad = [n for n in self.nfes if isinstance(n, bool) or not isinstance(n, int) or n < 1]
        if bad:
            raise ValueError(f"nfes={list(self.nfes)} has non-positive or non-integer values {bad}; every NFE must be an integer >= 1.")
        for name in ("num_samples", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        if self.seq_length is not None and self.seq_length < 2:
            raise ValueError(f"seq_length={self.seq_length!r} must be >= 2 or None (the model's length).")
        if self.mauve_num_buckets != "auto" and not str(self.mauve_num_buckets).isdigit():
            raise ValueError(f"mauve_num_buckets={self.mauve_num_buckets!r} must be 'auto' or an integer >= 2.")
        from prism_hf.sampling.scheduling_prism import PrismScheduler

        for rule, kwargs in self.rule_settings().items():  # validates the rule names, overrides and sampling values
            try:
                PrismScheduler(**kwargs)
            except (TypeError, ValueError) as err:
                raise ValueError(f"rule {rule!r}: {err}") from None

    def rule_settings(self) -> Dict[str, Dict[str, Any]]:
        """Scheduler kwargs of every requested rule: the global temperature / top_p, then the preset, then overrides."""
        overrides = {}
        if self.rule_overrides:
            overrides = json.loads(self.rule_overrides) if isinstance(self.rule_overrides, str) else dict(self.rule_overrides)
            if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
                raise ValueError(f"rule_overrides={self.rule_overrides!r} must be a JSON object {{rule: {{kwargs}}}}.")
        if not self.rules:
            raise ValueError("rules is empty; pass at least one sampling rule, e.g. --rules prism vanilla.")
        settings = {}
        for rule in self.rules:
            own = overrides.get(rule, {})
            known = rule in METHOD_PRESETS or rule in DEPRECATED_METHOD_NAMES
            if not known and "remasking" not in own:
                raise ValueError(
                    f"rules has {rule!r}, which is neither a method preset ({list(METHOD_PRESETS)}) nor defined in "
                    "rule_overrides with a 'remasking' key."
                )
            kwargs = {"temperature": self.temperature, "top_p": self.top_p, "top_p_mode": self.top_p_mode}
            if known:
                kwargs.update(get_method_preset(rule).scheduler_kwargs(TEXT_SAMPLER))
            kwargs.update(own)
            settings[rule] = kwargs
        return settings


def load_generator(args: EvalArguments):
    """The model to sample from (PRISM checkpoint or plain backbone), its tokenizer and its mask id."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    from prism_hf import PrismForMaskedDiffusion
    from prism_hf.modeling.configuration_prism import PrismConfig

    dtype = getattr(torch, args.dtype)
    config_file = Path(args.model_name_or_path) / "config.json"
    is_prism = False
    if config_file.is_file():
        saved = json.loads(config_file.read_text())
        is_prism = saved.get("model_type") == PrismConfig.model_type
    else:
        saved = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code).to_dict()
        is_prism = saved.get("model_type") == PrismConfig.model_type
    if is_prism:
        model = PrismForMaskedDiffusion.from_pretrained(
            args.model_name_or_path, backbone=args.backbone_name_or_path, trust_remote_code=args.trust_remote_code or None,
            dtype=dtype,
        )
    else:
        model = AutoModelForMaskedLM.from_pretrained(
            args.model_name_or_path, trust_remote_code=args.trust_remote_code, dtype=dtype
        )
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name or args.model_name_or_path)
    return model.eval(), tokenizer


def reference_texts(args: EvalArguments, tokenizer, seq_length: int, count: int) -> List[str]:
    """Held-out documents packed exactly like the training data into ``count`` blocks of ``seq_length``, decoded."""
    dataset = load_text_dataset(dataset_name=args.reference_dataset_name, dataset_config=args.reference_dataset_config,
                                split=args.reference_split, data_files=args.reference_files,
                                text_column=args.reference_text_column, argument="--reference_text_column")
    start = max(0, len(dataset) - args.reference_last_n) if args.reference_last_n else 0
    blocks: List[List[int]] = []
    chunk = 1000
    for begin in range(start, len(dataset), chunk):
        texts = dataset.select(range(begin, min(begin + chunk, len(dataset))))[args.reference_text_column]
        blocks += pack_texts(texts, tokenizer, seq_length)["input_ids"]
        if len(blocks) >= count:
            break
    if len(blocks) < count:
        raise ValueError(
            f"The reference text packs into only {len(blocks)} blocks of {seq_length} tokens; MAUVE needs num_reference={count}. "
            "Add reference text or lower --num_reference."
        )
    return tokenizer.batch_decode(blocks[:count], skip_special_tokens=args.skip_special_tokens)


def sample(model, scheduler_kwargs: Dict[str, Any], nfe: int, num_samples: int, batch_size: int, seq_length: int,
           mask_token_id: int, seed: int, device: torch.device):
    """``num_samples`` unconditional samples (all-mask start) in ``nfe`` steps; returns ``(ids (N, L), forwards)``."""
    from prism_hf.sampling.pipeline_prism import PrismPipeline
    from prism_hf.sampling.scheduling_prism import PrismScheduler

    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks, forwards = [], 0
    for start in range(0, num_samples, batch_size):
        rows = min(batch_size, num_samples - start)
        start_ids = torch.full((rows, seq_length), mask_token_id, dtype=torch.long, device=device)
        out = pipe(input_ids=start_ids, gen_length=0, num_inference_steps=nfe, generator=generator, output_type="seq",
                   return_quality=False, mask_token_id=mask_token_id, show_progress=False)
        chunks.append(out.sequences.cpu())
        forwards = max(forwards, int(out.nfe))
    return torch.cat(chunks), forwards


def load_generator_for(args: EvalArguments, settings: Dict[str, Dict[str, Any]], device: torch.device):
    """The generator, its tokenizer, mask id and sequence length; refuses a plain backbone for rules that need a
    quality head."""
    from prism_hf.modeling.families import mask_token_id_for, max_length_of
    from prism_hf.sampling.remasking import get_remasking_rule

    model, tokenizer = load_generator(args)
    model.to(device)
    need_head = [rule for rule, kw in settings.items() if get_remasking_rule(kw["remasking"]).needs_quality]
    if need_head and not hasattr(model, "quality_head"):
        raise ValueError(
            f"rules {need_head} need a quality head, but --model_name_or_path={args.model_name_or_path!r} is a plain "
            f"{type(model).__name__} backbone. Pass a PRISM checkpoint (train_text.py output) or drop those rules."
        )
    seq_length = args.seq_length or max_length_of(model)
    if seq_length is None:
        raise ValueError("The model's config does not say its sequence length; pass --seq_length.")
    return model, tokenizer, mask_token_id_for(model, tokenizer=tokenizer), seq_length


class Scorer:
    """Gen PPL under the judge, unigram entropy and (with ``--mauve``) MAUVE against held-out text of the same
    length. The judge loads first: a non-causal eval model fails before any sampling."""

    def __init__(self, args: EvalArguments, device: torch.device):
        from prism_hf.evaluation.text_metrics import load_causal_lm

        self.args = args
        self.judge, self.judge_tokenizer = load_causal_lm(
            args.eval_model, None if args.eval_tokenizer is None else _tokenizer(args.eval_tokenizer), device=device,
            argument="--eval_model",
        )
        self.feature_model, self.feature_tokenizer = self.judge, self.judge_tokenizer
        if args.mauve and args.feature_model is not None and args.feature_model != args.eval_model:
            from transformers import AutoModel

            self.feature_model = AutoModel.from_pretrained(args.feature_model).to(device).eval()
            self.feature_tokenizer = _tokenizer(args.feature_model)
        self.reference_features = None

    def set_reference(self, tokenizer, seq_length: int) -> None:
        """Features of the held-out reference blocks (decoded with the generator's ``tokenizer``)."""
        from prism_hf.evaluation.text_metrics import text_features

        if self.args.mauve:
            references = reference_texts(self.args, tokenizer, seq_length, self.args.num_reference or self.args.num_samples)
            self.reference_features = text_features(references, self.feature_model, self.feature_tokenizer,
                                                    batch_size=self.args.eval_batch_size)

    def __call__(self, ids: torch.Tensor, texts: List[str]) -> Dict[str, Any]:
        """``entropy``, ``gen_ppl`` and ``mauve`` (`None` without a reference) of one cell's samples."""
        from prism_hf.evaluation.text_metrics import generative_perplexity, mauve_score, text_features, unigram_entropy

        args = self.args
        scores = {
            "entropy": unigram_entropy(ids),
            "gen_ppl": generative_perplexity(texts, self.judge, self.judge_tokenizer, batch_size=args.eval_batch_size).gen_ppl,
            "mauve": None,
        }
        if self.reference_features is not None:
            features = text_features(texts, self.feature_model, self.feature_tokenizer, batch_size=args.eval_batch_size)
            buckets = "auto" if args.mauve_num_buckets == "auto" else int(args.mauve_num_buckets)
            scores["mauve"] = mauve_score(p_features=features, q_features=self.reference_features, num_buckets=buckets,
                                          kmeans_num_redo=args.mauve_kmeans_num_redo, seed=args.seed).mauve
        return scores


def evaluate(args: EvalArguments) -> Dict[str, Any]:
    """Sample every rule at every NFE, score the samples, and write ``results.json``, the plot and the samples."""
    from prism_hf.evaluation.text_metrics import decode_samples, plot_metrics_vs_nfe

    settings = args.rule_settings()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(args, device)
    model, tokenizer, mask_token_id, seq_length = load_generator_for(args, settings, device)
    scorer.set_reference(tokenizer, seq_length)
    rows = []
    for rule, scheduler_kwargs in settings.items():
        for nfe in args.nfes:
            began = time.time()
            ids, forwards = sample(model, scheduler_kwargs, nfe, args.num_samples, args.batch_size, seq_length,
                                   mask_token_id, args.seed, device)
            texts = decode_samples(ids, tokenizer, mask_token_id=mask_token_id, skip_special_tokens=args.skip_special_tokens)
            row: Dict[str, Any] = {"rule": rule, "nfe": nfe, "forwards": forwards, "num_samples": len(texts),
                                   "seq_length": seq_length, **scorer(ids, texts)}
            row["seconds"] = round(time.time() - began, 2)
            rows.append(row)
            logger.info("%s", row)
            if args.save_samples:
                with open(output_dir / f"samples_{rule}_{nfe}.jsonl", "w", encoding="utf-8") as handle:
                    handle.writelines(json.dumps({"text": text}) + "\n" for text in texts)

    report = {"settings": {**asdict(args), "rule_settings": settings, "seq_length": seq_length}, "results": rows}
    (output_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
    plot_metrics_vs_nfe(rows, output_dir / "metrics_vs_nfe.png", title=Path(args.model_name_or_path).name)
    print(_markdown_table(rows))
    return report


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def _markdown_table(rows: List[Dict[str, Any]]) -> str:
    def fmt(value):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"

    lines = ["| rule | NFE | Gen PPL | entropy | MAUVE |", "|---|---|---|---|---|"]
    lines += [f"| {r['rule']} | {r['nfe']} | {fmt(r['gen_ppl'])} | {fmt(r['entropy'])} | {fmt(r['mauve'])} |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    (args,) = parse_args(argv, dataclass_types=(EvalArguments,))
    logging.basicConfig(level=logging.INFO)
    return evaluate(args)


if __name__ == "__main__":
    main()
