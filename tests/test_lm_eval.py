"""lm-evaluation-harness support (prism_hf.evaluation.lm_eval_model): the Monte Carlo estimator against exact
enumeration, PrismLM's requests, bad input, local tasks through simple_evaluate, the `lm_eval` command line and two
processes under `accelerate launch`."""

import glob
import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from prism_hf import PrismForMaskedDiffusion  # noqa: E402
from prism_hf.evaluation.lm_eval_model import (  # noqa: E402
    PrismLM,
    greedy_match,
    monte_carlo_loglikelihood,
    pipeline_arguments,
    scheduler_arguments,
)
from prism_hf.testing import tiny_bert, tiny_char_tokenizer, tiny_llada  # noqa: E402

SCRIPT = Path(__file__).parent / "scripts" / "lm_eval_two_processes.py"

# ----- hand-set models: the log-likelihood target is computable by enumeration ------------------------------------
REAL = 4  # token ids 0..3; id 4 is the mask
MASK = REAL


def _with_mask_column(scores: torch.Tensor) -> torch.Tensor:
    """(B, S, REAL) scores -> (B, S, REAL + 1) logits whose mask column has probability 0 (a finite logit, as a real
    model's: guidance subtracts logits)."""
    return torch.cat([scores, torch.full(scores.shape[:-1] + (1,), -1e4, dtype=scores.dtype)], -1)


class TableModel:
    """Logits at position i: ``bias[i] + sum over visible j of weight[i, j, x_j]``, a fixed function of the visible
    tokens (padding, attention 0, is not visible). Its conditionals are not those of one joint distribution."""

    def __init__(self, seq_len: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.bias = torch.randn(seq_len, REAL, generator=generator, dtype=torch.float64)
        self.weight = torch.randn(seq_len, seq_len, REAL, REAL, generator=generator, dtype=torch.float64)

    def __call__(self, ids, attention_mask=None):
        visible = ids != MASK
        if attention_mask is not None:
            visible = visible & attention_mask.bool()
        onehot = F.one_hot(ids.clamp(max=REAL - 1), REAL).double() * visible[..., None]
        width = ids.shape[1]
        scores = self.bias[:width] + torch.einsum("bjr,ijrv->biv", onehot, self.weight[:width, :width])
        return _with_mask_column(scores).float()


class JointModel:
    """Exact conditionals of one joint distribution q over the continuation (positions ``start .. start + length``):
    the prediction at a masked position is its marginal under q given the visible continuation tokens."""

    def __init__(self, start: int, length: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.start, self.length = start, length
        self.values = torch.tensor(list(itertools.product(range(REAL), repeat=length)))  # (K, L)
        self.log_q = (1.5 * torch.randn(len(self.values), generator=generator, dtype=torch.float64)).log_softmax(0)

    def log_prob(self, continuation) -> float:
        index = (self.values == torch.as_tensor(continuation)).all(-1).nonzero().item()
        return float(self.log_q[index])

    def __call__(self, ids, attention_mask=None):
        cont = ids[:, self.start : self.start + self.length]
        visible = cont != MASK
        compatible = ((self.values[None] == cont[:, None]) | ~visible[:, None]).all(-1)  # (B, K)
        weights = torch.where(compatible, self.log_q, torch.tensor(float("-inf"), dtype=torch.float64))
        has_value = F.one_hot(self.values, REAL).bool()  # (K, L, REAL)
        marginal = torch.where(has_value[None], weights[:, :, None, None], float("-inf")).logsumexp(1)  # (B, L, REAL)
        scores = torch.zeros(ids.shape + (REAL,), dtype=torch.float64)
        scores[:, self.start : self.start + self.length] = marginal
        return _with_mask_column(scores).float()


def exact_bound(logits_fn, ids, positions) -> float:
    """B(x | c) = sum_l (1 / l) mean over |M| = l of sum_{i in M} log p(x_i | x outside M), by enumeration."""
    total, length = 0.0, len(positions)
    for size in range(1, length + 1):
        subsets = list(itertools.combinations(positions, size))
        for subset in subsets:
            noisy = ids.clone()
            noisy[0, list(subset)] = MASK
            logp = logits_fn(noisy).double().log_softmax(-1)[0]
            total += sum(float(logp[i, ids[0, i]]) for i in subset) / (size * len(subsets))
    return total


def guided(logits_fn, context_positions, scale):
    """LLaDA's classifier-free guidance written out: cond + scale * (cond - uncond), uncond with the context masked."""
    def fn(ids, attention_mask=None):
        uncond_ids = ids.clone()
        uncond_ids[:, context_positions] = MASK
        cond, uncond = logits_fn(ids, attention_mask).double(), logits_fn(uncond_ids, attention_mask).double()
        return cond + scale * (cond - uncond)
    return fn


def replicate_estimates(logits_fn, rows, targets, replicates, mc_num, mc_sampling, cfg_scale=0.0, seed=0):
    """``replicates`` independent estimates of each (row, target) pair from one batched call; rows are padded."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows) * replicates, width), 0, dtype=torch.long)
    target = torch.zeros(ids.shape, dtype=torch.bool)
    attention = torch.zeros(ids.shape, dtype=torch.long)
    for k, (row, positions) in enumerate(zip(rows, targets)):
        block = slice(k * replicates, (k + 1) * replicates)
        ids[block, : len(row)] = torch.tensor(row)
        attention[block, : len(row)] = 1
        target[block, positions] = True
    out = monte_carlo_loglikelihood(
        logits_fn, ids, target, mask_token_id=MASK, mc_num=mc_num, batch_size=4096, mc_sampling=mc_sampling,
        cfg_scale=cfg_scale, attention_mask=None if bool(attention.bool().all()) else attention,
        generator=torch.Generator().manual_seed(seed),
    )
    return out.loglikelihood.double().view(len(rows), replicates), out


@pytest.mark.parametrize("mc_sampling", ["fixed_count", "random_rate"])
def test_estimator_is_unbiased_for_the_enumerated_bound(mc_sampling):
    """Two padded rows of different lengths in one call; each mean of 1500 independent estimates (8 draws each) lies
    within 4 standard errors of B computed by enumerating every masked subset of the hand-set TableModel."""
    model = TableModel(seq_len=6, seed=1)
    rows, targets = [[0, 3, 1, 2, 2, 0], [1, 1, 3, 0, 2]], [[2, 3, 4, 5], [3, 4]]
    estimates, out = replicate_estimates(model, rows, targets, replicates=1500, mc_num=8, mc_sampling=mc_sampling)
    for k, (row, positions) in enumerate(zip(rows, targets)):
        exact = exact_bound(model, torch.tensor([row]), positions)
        mean, se = float(estimates[k].mean()), float(estimates[k].std() / math.sqrt(estimates.shape[1]))
        print(f"{mc_sampling} row {k}: exact B = {exact:.5f}, MC mean = {mean:.5f}, SE = {se:.5f}, "
              f"draws = {estimates.shape[1] * 8}")
        assert abs(mean - exact) < 4 * se, (mc_sampling, k, exact, mean, se)
    assert out.forward_rows == 2 * 1500 * 8


def test_estimator_recovers_the_log_likelihood_of_a_consistent_model():
    """For conditionals of one joint distribution q, B = log q(x | c) exactly (every generation order gives the same
    product), and the estimate is unbiased for it."""
    model = JointModel(start=2, length=3, seed=3)
    row, positions = [1, 2, 3, 0, 2], [2, 3, 4]
    exact = exact_bound(model, torch.tensor([row]), positions)
    log_q = model.log_prob(row[2:])
    assert exact == pytest.approx(log_q, abs=1e-5 * math.sqrt(len(model.values)))  # float32 logits, K-term sums
    estimates, _ = replicate_estimates(model, [row], [positions], replicates=2000, mc_num=6, mc_sampling="fixed_count")
    mean, se = float(estimates.mean()), float(estimates.std() / math.sqrt(estimates.numel()))
    print(f"consistent model: log q = {log_q:.5f}, MC mean = {mean:.5f}, SE = {se:.5f}, draws = {estimates.numel() * 6}")
    assert abs(mean - log_q) < 4 * se


def test_estimator_with_guidance_targets_the_bound_of_the_guided_logits():
    model = TableModel(seq_len=6, seed=5)
    row, positions = [2, 0, 1, 3, 3, 1], [3, 4, 5]
    exact = exact_bound(guided(model, [0, 1, 2], 1.5), torch.tensor([row]), positions)
    assert exact != pytest.approx(exact_bound(model, torch.tensor([row]), positions), abs=1e-2)  # guidance matters
    estimates, out = replicate_estimates(model, [row], [positions], 1500, 6, "fixed_count", cfg_scale=1.5)
    mean, se = float(estimates.mean()), float(estimates.std() / math.sqrt(estimates.numel()))
    assert abs(mean - exact) < 4 * se, (exact, mean, se)
    assert out.forward_rows == 2 * 1500 * 6  # each draw: a conditional and an unconditional row


def _greedy_reference(logits_fn, ids, positions):
    """One token per step: the masked position whose argmax is most probable gets its argmax."""
    x = ids.clone()
    x[0, positions] = MASK
    for _ in positions:
        probs = logits_fn(x).double().softmax(-1)[0]
        best_prob, best_token = probs.max(-1)
        masked = x[0] == MASK
        position = torch.where(masked, best_prob, -1.0).argmax()
        x[0, position] = best_token[position]
    return x[0, positions].tolist()


def test_greedy_match_reproduces_greedy_decoding_across_padding_and_lengths():
    model = TableModel(seq_len=7, seed=7)
    rows = [[0, 1, 2, 3, 0, 1, 2], [3, 2, 1, 0, 0], [1, 1, 1, 2]]
    targets = [[3, 4, 5, 6], [3, 4], [2, 3]]
    greedy_rows = []
    for row, positions in zip(rows, targets):
        decoded = _greedy_reference(model, torch.tensor([row]), positions)
        greedy_rows.append(row[: positions[0]] + decoded)
    wrong = [r[:-1] + [(r[-1] + 1) % REAL] for r in greedy_rows]
    candidates = greedy_rows + wrong
    ids = torch.zeros(len(candidates), 7, dtype=torch.long)
    attention = torch.zeros_like(ids)
    target = torch.zeros(ids.shape, dtype=torch.bool)
    for k, (row, positions) in enumerate(zip(candidates, targets + targets)):
        ids[k, : len(row)], attention[k, : len(row)] = torch.tensor(row), 1
        target[k, positions] = True
    matches, forward_rows = greedy_match(model, ids, target, mask_token_id=MASK, batch_size=8, attention_mask=attention)
    assert matches.tolist() == [True] * 3 + [False] * 3
    assert forward_rows == sum(len(t) for t in targets + targets)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mc_num": 0}, "mc_num=0"),
        ({"mc_sampling": "stratified"}, "mc_sampling='stratified'"),
        ({"cfg_scale": -1.0}, "cfg_scale=-1.0"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_estimator_rejects_bad_arguments(kwargs, message):
    ids, target = torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        monte_carlo_loglikelihood(TableModel(3, 0), ids, target, mask_token_id=MASK, **kwargs)


# ----- PrismLM ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def char_tokenizer():
    return tiny_char_tokenizer()


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, char_tokenizer):
    """A plain BERT backbone and a PRISM checkpoint (its backbone stored in it), each saved with the tokenizer."""
    root = tmp_path_factory.mktemp("lm_eval_models")
    vocab, mask = len(char_tokenizer), char_tokenizer.mask_token_id
    backbone_dir, prism_dir = root / "backbone", root / "prism"
    tiny_bert(vocab_size=vocab, hidden_size=32, num_layers=1, max_length=128, seed=0).save_pretrained(backbone_dir)
    model = PrismForMaskedDiffusion.from_backbone(tiny_bert(vocab_size=vocab, hidden_size=32, num_layers=1, max_length=128),
                                                  mask_token_id=mask)
    model.save_pretrained(prism_dir)
    for folder in (backbone_dir, prism_dir):
        char_tokenizer.save_pretrained(folder)
    return {"backbone": backbone_dir, "prism": prism_dir}


def _llada_lm(char_tokenizer, **kwargs):
    backbone = tiny_llada(vocab_size=len(char_tokenizer), mask_token_id=char_tokenizer.mask_token_id)
    return PrismLM(pretrained=backbone, tokenizer=char_tokenizer, device="cpu", **kwargs)


def _reference_reply(lm, context, length, max_gen_toks, until, **call_kwargs):
    """What generate_until must return for one prompt run alone: the first max_gen_toks tokens, cut at the first stop
    sequence (or EOS), special tokens dropped."""
    ids = torch.tensor([lm.tok_encode(context)])
    out = lm.pipeline(input_ids=ids, gen_length=length, output_type="seq", return_quality=False, show_progress=False,
                      **call_kwargs)
    text = lm.tokenizer.decode(out.sequences[0, :max_gen_toks].tolist(), skip_special_tokens=False)
    stops = [s for s in until + [lm.tokenizer.eos_token] if s in text]
    text = text[: min(text.find(s) for s in stops)] if stops else text
    for special in lm.tokenizer.all_special_tokens:
        text = text.replace(special, "")
    return text, out.nfe


def test_generate_until_batches_prompts_and_honours_stop_sequences_and_max_gen_toks(char_tokenizer):
    lm = _llada_lm(char_tokenizer, batch_size=4, remasking="none", block_length=4)
    contexts = ["Q: 2+3=", "Q: what is the colour of the sky? A:", "hi"]
    alone = [_reference_reply(lm, c, 8, 8, [])[0] for c in contexts]
    # stop strings taken from what each prompt generates alone, so that the cut really happens mid-reply
    untils = [[alone[0][2:4]], [alone[1][5:6], "\n\n"], []]
    requests = [Instance("generate_until", {}, (c, {"until": u, "max_gen_toks": 8}), i)
                for i, (c, u) in enumerate(zip(contexts, untils))]
    requests.append(Instance("generate_until", {}, (contexts[0], {"until": [], "max_gen_toks": 3}), 3))
    replies = lm.generate_until(requests)
    expected = [_reference_reply(lm, c, 8, 8, u)[0] for c, u in zip(contexts, untils)]
    expected.append(_reference_reply(lm, contexts[0], 4, 3, [])[0])  # canvas: 3 rounded up to a block of 4
    assert replies == expected
    assert len(replies[0]) < len(alone[0]) and len(replies[3]) <= 3
    nfe = lm.get_model_info()["prism"]["nfe"]["generate_until"]
    # one token per step: an 8-token canvas takes 8 forwards, the 4-token one 4; three prompts share one batch
    assert nfe == {"requests": 4, "forward_calls": 8 + 4, "forward_rows": 3 * 8 + 4, "nfe_per_request": (3 * 8 + 4) / 4}


def test_guidance_reaches_generation_when_the_pipeline_takes_it(char_tokenizer):
    lm = _llada_lm(char_tokenizer, batch_size=2, remasking="none", cfg_scale=1.0, num_inference_steps=4)
    if not lm._pipeline_takes_cfg:
        pytest.skip("this PrismPipeline has no cfg_scale")
    contexts = ["a=", "bb="]
    requests = [Instance("generate_until", {}, (c, {"until": [], "max_gen_toks": 4}), i) for i, c in enumerate(contexts)]
    replies = lm.generate_until(requests)
    assert replies == [_reference_reply(lm, c, 4, 4, [], cfg_scale=1.0, num_inference_steps=4)[0] for c in contexts]
    nfe = lm.get_model_info()["prism"]["nfe"]["generate_until"]
    assert nfe["forward_rows"] == 2 * 4 * 2  # two prompts, four steps, a conditional and an unconditional row each


def test_loglikelihood_counts_draws_and_checks_greedy(char_tokenizer):
    lm = _llada_lm(char_tokenizer, batch_size=8, mc_num=4, check_greedy=True, remasking="none")
    requests = [Instance("loglikelihood", {}, ("Q: 2+3=", "5"), 0), Instance("loglikelihood", {}, ("Q: sky?", " blue"), 1),
                Instance("loglikelihood", {}, ("", "abc"), 2)]
    results = lm.loglikelihood(requests)
    assert all(isinstance(ll, float) and ll < 0 and isinstance(greedy, bool) for ll, greedy in results)
    nfe = lm.get_model_info()["prism"]["nfe"]["loglikelihood"]
    assert nfe["requests"] == 3
    assert nfe["forward_rows"] == 3 * 4 + (1 + 5 + 3)  # mc_num draws each, plus one greedy step per token


def test_loglikelihood_rolling_scores_every_token_once(char_tokenizer):
    """A model that predicts every token with the same probability makes every draw exact: each of the document's n
    tokens scores -log(V - 1) (the mask is never predicted), whatever the windows, which cover each token once."""

    class Uniform(torch.nn.Module):
        config = type("Config", (), {"mask_token_id": char_tokenizer.mask_token_id})()

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(input_ids.shape + (len(char_tokenizer),))
            logits[..., char_tokenizer.mask_token_id] = float("-inf")
            return type("Out", (), {"logits": logits})()

    lm = PrismLM(pretrained=Uniform(), tokenizer=char_tokenizer, device="cpu", mc_num=3, max_length=8, batch_size=4,
                 remasking="none")
    text = "masked diffusion, rolling windows"
    (score,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    n = len(lm.tok_encode(text, add_special_tokens=False))
    assert score == pytest.approx(-n * math.log(len(char_tokenizer) - 1), rel=1e-5 * math.sqrt(n))
    nfe = lm.get_model_info()["prism"]["nfe"]["loglikelihood_rolling"]
    assert nfe["requests"] == 1 and nfe["forward_rows"] == math.ceil(n / 7) * 3  # windows of max_length - 1 tokens


def test_a_backbone_without_padding_mask_gets_one_length_per_batch(char_tokenizer):
    """MDLM's DiT attends to every position: requests of different lengths must not be padded into one forward."""
    from prism_hf.testing import tiny_mdlm

    lm = PrismLM(pretrained=tiny_mdlm(vocab_size=len(char_tokenizer) + 1), tokenizer=char_tokenizer, device="cpu",
                 batch_size=8, mc_num=4, remasking="none")
    assert not lm._takes_padding_mask()
    lm.loglikelihood([Instance("loglikelihood", {}, ("Q: 2+3=", "5"), 0), Instance("loglikelihood", {}, ("Q:", " 12"), 1)])
    assert lm.get_model_info()["prism"]["nfe"]["loglikelihood"]["forward_calls"] == 2  # a padded batch would be 1
    padded = _llada_lm(char_tokenizer, batch_size=8, mc_num=4, remasking="none")
    padded.loglikelihood([Instance("loglikelihood", {}, ("Q: 2+3=", "5"), 0), Instance("loglikelihood", {}, ("Q:", " 12"), 1)])
    assert padded.get_model_info()["prism"]["nfe"]["loglikelihood"]["forward_calls"] == 1


def test_model_args_are_the_scheduler_and_pipeline_signatures():
    scheduler, pipeline = scheduler_arguments(), pipeline_arguments()
    assert {"remasking", "unmasking", "num_remask", "block_length", "temperature"} <= set(scheduler)
    assert {"num_inference_steps", "eos_early_stop"} <= set(pipeline)
    assert not {"input_ids", "generator", "gen_length", "output_type"} & set(pipeline)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"remaskng": "prism"}, r"Unknown --model_args \['remaskng'\].*'remasking'.*'num_inference_steps'"),
        ({"mc_num": 0}, r"mc_num=0 must be an int >= 1"),
        ({"mc_sampling": "exact"}, r"mc_sampling='exact' is not valid"),
        ({"dtype": "int8"}, r"dtype='int8'"),
        ({"batch_size": "auto"}, r"batch_size='auto'.*not supported"),
        ({"remasking": "prism"}, r"remasking='prism' needs a PRISM quality head.*'none'"),
        ({"remasking": "low_confidence"}, r"low_confidence"),
        ({"method": "prsim"}, r"method='prsim' is not a known sampling method; valid names: .*'remdm-conf'"),
        ({"method": "prism", "remasking": "prism"}, r"method='prism' and remasking='prism': pass one"),
        ({"method": "vanilla", "num_remask": 2}, r"method='vanilla' does not use num_remask=2"),
        ({"method": "vanilla-margin", "unmasking": "random"}, r"method='vanilla-margin' does not use unmasking='random'"),
        ({"method": "remdm-cap", "eta": 0.1}, r"method='remdm-cap' does not use eta=0.1: it sets .*'eta': 0.04"),
        ({"method": "prism"}, r"method='prism' needs a PRISM quality head, but pretrained=.* is a plain backbone .*"
                              r"a method that needs no head: \['vanilla', .*'confidence-remask', 'random-remask'\]"),
        ({"method": "remdm_conf"}, r"method='remdm_conf' is not a known sampling method"),
    ],
)
def test_bad_model_args_fail_before_any_request(saved_models, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrismLM(pretrained=str(saved_models["backbone"]), device="cpu", **kwargs)


def test_model_args_string_reads_remasking_none_as_the_rule(saved_models):
    """lm-eval's --model_args parser turns the word `none` into None; for a rule name that means the rule "none"."""
    lm = PrismLM.create_from_arg_string(f"pretrained={saved_models['backbone']},remasking=none,eta=none,mc_num=2",
                                        {"device": "cpu", "batch_size": "4"})
    assert lm.scheduler.config.remasking == "none" and lm.scheduler.config.eta is None
    assert lm.batch_size_per_gpu == 4 and lm.mc_num == 2 and not lm.is_prism_checkpoint


def test_method_presets_give_the_same_sampler_as_the_evaluations_table(saved_models):
    """method= takes the preset table of the Sudoku, code and text evaluations: a method sets its remasking rule (and
    a vanilla baseline its unmasking rule), the task's remask counts go to the methods that use them, the other
    scheduler arguments are added, and lm-eval's results record the method."""
    from prism_hf.sampling.presets import get_method_preset

    task = {"unmasking": "random", "num_remask": 2, "remask_schedule": "fixed"}
    for method, backbone_only in (("confidence-remask", True), ("random-remask", True), ("vanilla-margin", True),
                                  ("remdm-conf", True), ("prism", False)):
        given = task if get_method_preset(method).uses_remask_counts else (
            {} if method.startswith("vanilla-") else {"unmasking": "random"})
        args = ",".join(f"{k}={v}" for k, v in {**given, "block_length": 4, "method": method}.items())
        pretrained = saved_models["backbone" if backbone_only else "prism"]
        lm = PrismLM.create_from_arg_string(f"pretrained={pretrained},{args},mc_num=2", {"device": "cpu"})
        expected = get_method_preset(method).scheduler(given, block_length=4).config
        assert dict(lm.scheduler.config) == dict(expected), method
        assert lm.get_model_info()["prism"]["method"] == method
    assert lm.scheduler.config.remasking == "prism" and lm.scheduler.config.num_remask == 2
    with pytest.raises(ValueError, match=r"method=none is not a method .* use method=vanilla"):
        PrismLM.create_from_arg_string(f"pretrained={saved_models['prism']},method=none", {"device": "cpu"})
    with pytest.raises(ValueError, match=r"method=none is not a method"):
        PrismLM.create_from_arg_obj({"pretrained": str(saved_models["prism"]), "method": None}, {"device": "cpu"})
    margin = PrismLM(pretrained=str(saved_models["backbone"]), device="cpu", mc_num=2, method="vanilla-margin")
    assert margin.scheduler.config.remasking == "none" and margin.scheduler.config.unmasking == "margin"


def test_a_path_that_is_no_checkpoint_is_rejected(tmp_path):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"neither a PRISM checkpoint nor a backbone of a registered family.*gpt2"):
        PrismLM(pretrained=str(tmp_path / "gpt2"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"neither a PRISM checkpoint nor a backbone"):
        PrismLM(pretrained=str(tmp_path / "empty"), device="cpu")


# ----- local tasks through lm-eval ----------------------------------------------------------------------------------
GEN_TASK, MC_TASK = "prism_test_gen", "prism_test_mc"


def write_local_tasks(folder: Path, num_docs: int = 4) -> Path:
    """A generate_until task (exact match) and a multiple-choice task (loglikelihood) over local jsonl files."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = [(a, b) for a in range(1, 5) for b in range(1, 5)][:num_docs]
    with open(folder / "gen.jsonl", "w") as f:
        for a, b in sums:
            f.write(json.dumps({"question": f"{a}+{b}", "answer": str(a + b)}) + "\n")
    with open(folder / "mc.jsonl", "w") as f:
        for a, b in sums:
            choices = [str(a + b), str(a + b + 1), str(a * b + 10)]
            f.write(json.dumps({"question": f"{a}+{b}", "choices": choices, "label": 0}) + "\n")
    common = "dataset_path: json\ntest_split: test\ndoc_to_text: \"Q: {{question}}\\nA:\"\n"
    (folder / "gen.yaml").write_text(
        f"task: {GEN_TASK}\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_target: answer\ntarget_delimiter: \" \"\n"
        "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    (folder / "mc.yaml").write_text(
        f"task: {MC_TASK}\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_choice: choices\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n"
    )
    return folder


def test_simple_evaluate_runs_local_tasks_and_records_sampler_and_nfe(tmp_path, saved_models):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks_dir = write_local_tasks(tmp_path / "tasks")
    results = simple_evaluate(
        model="prism",
        model_args=f"pretrained={saved_models['prism']},remasking=prism,num_remask=1,block_length=4,"
                   "num_inference_steps=4,mc_num=4,check_greedy=True",
        tasks=[GEN_TASK, MC_TASK], task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False), batch_size=4,
        device="cpu", apply_chat_template=True, log_samples=True,
    )
    assert set(results["results"]) == {GEN_TASK, MC_TASK}
    assert 0.0 <= results["results"][GEN_TASK]["exact_match,none"] <= 1.0
    assert 0.0 <= results["results"][MC_TASK]["acc,none"] <= 1.0
    info = results["config"]["prism"]
    assert info["is_prism_checkpoint"] and info["sampler"]["remasking"] == "prism" and info["sampler"]["num_remask"] == 1
    assert info["generation"]["num_inference_steps"] == 4 and info["loglikelihood"]["mc_num"] == 4
    # 4 prompts, an 8-token canvas in 4 steps, no extra forward (return_quality=False)
    assert info["nfe"]["generate_until"] == {"requests": 4, "forward_calls": 4, "forward_rows": 16, "nfe_per_request": 4.0}
    samples = results["samples"]
    prompts = [s["arguments"][0][0] for s in samples[GEN_TASK]]
    assert all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in prompts)  # the chat template
    lm = PrismLM(pretrained=str(saved_models["prism"]), device="cpu")
    tokens = [len(lm.tok_encode(ctx + cont)) - len(lm.tok_encode(ctx))
              for s in samples[MC_TASK] for ctx, cont in s["arguments"]]
    assert info["nfe"]["loglikelihood"]["requests"] == len(tokens) == 12
    assert info["nfe"]["loglikelihood"]["forward_rows"] == 4 * len(tokens) + sum(tokens)  # draws + greedy steps


def _lm_eval_cli() -> str:
    found = shutil.which("lm_eval") or str(Path(sys.executable).parent / "lm_eval")
    if not Path(found).exists():
        pytest.skip("the lm_eval command is not installed")
    return found


def test_lm_eval_command_line_finds_the_prism_model(tmp_path, saved_models):
    """`lm_eval --model prism` in a fresh process, which imports nothing of prism_hf itself: lm-eval finds the model
    through the "lm_eval.models" entry point (read by the prism_hf_lm_eval.pth hook that `pip install` puts in
    site-packages, until lm-eval reads that group itself)."""
    tasks_dir = write_local_tasks(tmp_path / "tasks")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    command = [
        _lm_eval_cli(), "--model", "prism", "--model_args",
        f"pretrained={saved_models['prism']},remasking=remdm_conf,block_length=4,num_inference_steps=4,mc_num=2",
        "--tasks", f"{GEN_TASK},{MC_TASK}", "--include_path", str(tasks_dir), "--limit", "2", "--batch_size", "4",
        "--device", "cpu", "--output_path", str(tmp_path / "out"),
    ]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        result.stdout[-3000:] + result.stderr[-3000:]
        + "\n(if lm-eval does not know 'prism', reinstall prism_hf: pip install -e '.[eval]' writes the .pth hook)"
    )
    (path,) = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(path).read_text())
    assert set(results["results"]) == {GEN_TASK, MC_TASK}
    assert results["config"]["prism"]["sampler"]["remasking"] == "remdm_conf"
    assert results["config"]["prism"]["nfe"]["generate_until"]["nfe_per_request"] == 4.0


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_split_the_requests_and_gather_the_results(tmp_path, saved_models):
    """`accelerate launch` with two gloo processes on the CPU: each rank evaluates its own share of the documents, rank
    0 gathers every document's metrics and the NFE of both ranks, and the greedy replies equal a one-process run."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    if not Path(accelerate).exists():
        pytest.skip("the accelerate CLI is not installed")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks_dir = write_local_tasks(tmp_path / "tasks", num_docs=6)
    model_args = f"pretrained={saved_models['prism']},remasking=none,block_length=4,num_inference_steps=4,mc_num=2"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(2):
        command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                   str(SCRIPT), str(tmp_path / "out"), str(tasks_dir), model_args]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode == 0 or "address already in use" not in (result.stdout + result.stderr).lower():
            break
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["destroys_group_at_exit"] for r in ranks)  # else gloo can abort a finished rank at exit
    for kind, total in (("generate_until", 6), ("loglikelihood", 18)):
        local = [r["local_nfe"][kind]["requests"] for r in ranks]
        assert all(n > 0 for n in local) and sum(local) == total, (kind, local)
    gathered = json.loads((tmp_path / "out" / "results.json").read_text())
    assert gathered["n_samples"][GEN_TASK]["effective"] == 6 and len(gathered["replies"]) == 6
    assert gathered["nfe"]["generate_until"]["requests"] == 6 and gathered["nfe"]["loglikelihood"]["requests"] == 18
    alone = simple_evaluate(model="prism", model_args=model_args, tasks=[GEN_TASK],
                            task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False), batch_size=2, device="cpu",
                            log_samples=True)
    replies = {str(s["doc_id"]): s["resps"][0][0] for s in alone["samples"][GEN_TASK]}
    assert gathered["replies"] == replies


def test_compare_samplers_example_prints_one_row_per_sampler(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "compare_samplers_lm_eval.py"
    spec = importlib.util.spec_from_file_location("examples_compare_samplers_lm_eval", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.main(["--workdir", str(tmp_path), "--demo_train_steps", "2", "--limit", "3", "--batch_size", "4",
                         "--device", "cpu", "--samplers", "none,prism", "--output", str(tmp_path / "rows.json")])
    assert [r["remasking"] for r in rows] == ["none", "prism"]
    assert all(r["metric"] == "exact_match" and r["num_docs"] == 3 for r in rows)
    assert all(r["nfe_per_request"] == {"generate_until": 3.0} for r in rows)  # 6 tokens in 3 steps
    assert rows[1]["sampler"]["num_remask"] == 1 and "num_remask=1" in rows[1]["settings"]
    printed = capsys.readouterr().out
    assert "| none |" in printed and "| prism |" in printed and "NFE / request" in printed


def test_compare_samplers_example_compares_named_methods(tmp_path, capsys):
    """--methods runs the preset table: PRISM and the same-count baseline take the task's remask counts, a vanilla
    baseline takes neither them nor the task's unmasking rule, and the table is keyed by method."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "compare_samplers_lm_eval.py"
    spec = importlib.util.spec_from_file_location("examples_compare_samplers_lm_eval_methods", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.method_model_args("vanilla-margin", {"unmasking": "random", "num_remask": "2"}) == "method=vanilla-margin"
    assert example.method_model_args("prism", {"unmasking": "random", "num_remask": "2"}) == (
        "method=prism,unmasking=random,num_remask=2")
    rows = example.main(["--workdir", str(tmp_path), "--demo_train_steps", "2", "--limit", "3", "--batch_size", "4",
                         "--device", "cpu", "--methods", "vanilla-margin,confidence-remask,prism",
                         "--task_settings", "unmasking=random"])
    assert [(r["method"], r["remasking"]) for r in rows] == [
        ("vanilla-margin", "none"), ("confidence-remask", "confidence"), ("prism", "prism")]
    assert rows[0]["sampler"]["unmasking"] == "margin" and "num_remask" not in rows[0]["settings"]
    assert all(r["sampler"]["unmasking"] == "random" and r["sampler"]["num_remask"] == 1 for r in rows[1:])
    printed = capsys.readouterr().out
    assert "| method |" in printed and "| confidence-remask |" in printed
    for argv, message in ((["--methods", "prism", "--samplers", "none"], "pass one"),
                          (["--task_settings", "num_remask=1"], "--task_settings goes with --methods"),
                          (["--methods", "prsim"], "method='prsim' is not a known sampling method"),
                          (["--methods", "prism", "--task_settings", "temperature=1"], "must read KEY=VALUE"),
                          (["--methods", "prism", "--task_settings", "unmasking=random", "--model_args", "unmasking=margin"],
                           "['unmasking'] given in both --task_settings and --model_args"),
                          (["--methods", "prism", "--task_settings", "num_remask=1", "--sampler_args", "prism:num_remask=2"],
                           "['num_remask'] given in both --task_settings and --sampler_args prism:")):
        with pytest.raises(SystemExit):
            example.main(argv)
        assert message in capsys.readouterr().err
