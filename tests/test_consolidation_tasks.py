"""Issue 15 (tasks, CLI, examples, presets): one validation helper for the native ports' configs, one table of sampling
method presets, task commands as entry points, `head_type` everywhere, `prism_hf.arguments` moved to the examples,
and `prism_hf.testing` building only the real classes."""

import pytest

from prism_hf.utils.validation import check_positive_float, check_positive_int, check_probability, check_supported


# ----- one validation helper for the ports' configurations ------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_positive_int("n_layers", 0), r"^n_layers=0 must be a positive int\.$"),
        (lambda: check_positive_int("n_layers", True), r"^n_layers=True must be a positive int\.$"),
        (lambda: check_positive_int("n_kv_heads", -1, optional=True), r"^n_kv_heads=-1 must be a positive int or None\.$"),
        (lambda: check_positive_float("rms_norm_eps", 0.0), r"^rms_norm_eps=0\.0 must be a positive float\.$"),
        (lambda: check_positive_float("rope_theta", "big", example="500000.0"),
         r"^rope_theta='big' must be a positive float, e\.g\. 500000\.0\.$"),
        (lambda: check_probability("dropout", 1.0), r"^dropout=1\.0 must be a float in \[0, 1\)\.$"),
        (lambda: check_probability("dropout", False), r"^dropout=False must be a float in \[0, 1\)\.$"),
        (lambda: check_supported("init_fn", "xavier", ("normal", "mitchell"), "the native LLaDA port"),
         r"^init_fn='xavier' is not implemented by the native LLaDA port; supported values: \['normal', 'mitchell'\]\.$"),
        (lambda: check_supported("alibi", True, [False], "the native LLaDA port", "the forward asserts it is off"),
         r"^alibi=True is not implemented by the native LLaDA port \(the forward asserts it is off\); supported values: "
         r"\[False\]\.$"),
    ],
)
def test_validation_helpers_name_the_argument_the_value_and_what_is_valid(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_validation_helpers_accept_valid_values():
    check_positive_int("n_layers", 2)
    check_positive_int("n_kv_heads", None, optional=True)
    check_positive_float("rope_theta", 10_000)
    check_probability("dropout", 0.0)
    check_supported("rope", True, [True], "the native LLaDA port")


def test_every_port_configuration_uses_the_one_helper():
    from prism_hf.models.dream import DreamConfig
    from prism_hf.models.llada import LLaDAConfig
    from prism_hf.models.mdlm import MDLMConfig

    cases = [
        (lambda: MDLMConfig(n_blocks=0), r"n_blocks=0 must be a positive int\."),
        (lambda: MDLMConfig(dropout=1.5), r"dropout=1\.5 must be a float in \[0, 1\)\."),
        (lambda: DreamConfig(num_hidden_layers=0), r"num_hidden_layers=0 must be a positive int\."),
        (lambda: DreamConfig(rope_theta=-1.0), r"rope_theta=-1\.0 must be a positive float\."),
        (lambda: DreamConfig(hidden_act="prelu"), r"hidden_act='prelu' is not implemented by the native Dream port; "
                                                  r"supported values: \['silu'"),
        (lambda: LLaDAConfig(n_layers=0), r"n_layers=0 must be a positive int\."),
        (lambda: LLaDAConfig(init_fn="xavier"), r"init_fn='xavier' is not implemented by the native LLaDA port; "
                                                r"supported values: \['normal'"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()
