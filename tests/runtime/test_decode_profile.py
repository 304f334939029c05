"""The decode profile: its per-step arithmetic on known events, and a traced tiny program."""

from __future__ import annotations

import pytest
import torch

from executorch_optimum.runtime.decode_profile import (
    is_cpu_operator,
    profile_decode,
    profile_decodes,
    summarize,
)
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.support.tiny_programs import CachedTinyLm

VOCAB, HIDDEN, CONTEXT, MAX_SEQ_LEN = 12, 32, 24, 4  # a prompt of 18 wraps the ids


def test_summarize_adds_up_each_kind_per_step() -> None:
    # One prefill call (first value, left out), then three decode calls (milliseconds).
    events = [
        ("Method::execute", [9.0, 0.010, 0.012, 0.011]),
        ("DELEGATE_CALL", [5.0, 0.006, 0.006, 0.006]),
        ("OPERATOR_CALL", [3.0, 0.003, 0.003, 0.003]),
        ("Fully Connected (NC, F32) GEMM #1", [1.0, 0.002, 0.002, 0.002]),
        ("Fully Connected (NC, F32) GEMM #2", [1.0, 0.001, 0.001, 0.001]),
        ("eo::ring_sdpa.out", [2.0, 0.001, 0.002, 0.003]),
        ("native_call_cat.out", [0.5]),  # a prefill-only event: no decode time
    ]
    profile = summarize(events, prefill_calls=1, first_position=7)
    assert profile.steps == 3 and profile.first_position == 7
    assert profile.step_us == pytest.approx(11.0)  # mean of 10, 12, 11 us
    assert profile.delegate_calls_us == pytest.approx(6.0) and profile.operator_calls_us == pytest.approx(3.0)
    gemm, sdpa = profile.ops  # slowest first; the two GEMM events are one kind
    assert (gemm.name, gemm.calls_per_step, gemm.us_per_step) == (
        "Fully Connected (NC, F32) GEMM",
        2,
        pytest.approx(3.0),
    )
    assert (sdpa.name, sdpa.calls_per_step, sdpa.us_per_step) == ("eo::ring_sdpa.out", 1, pytest.approx(2.0))
    assert profile.delegate_untraced_us == pytest.approx(6.0 - 3.0)  # the sdpa is a CPU operator
    assert "| eo::ring_sdpa.out | 1 | 2.0 | 18.2 |" in profile.table()


def test_breakdown_groups_the_step_for_a_comparison() -> None:
    events = [
        ("Method::execute", [9.0, 0.020]),
        ("DELEGATE_CALL", [5.0, 0.012]),
        ("OPERATOR_CALL", [3.0, 0.006]),
        ("Fully Connected (NC, QDU8, F32, QB4W) GEMM #1", [1.0, 0.005]),
        ("Fully Connected (NC, F32) GEMM #1", [1.0, 0.002]),
        ("Multiply (ND) #4", [1.0, 0.001]),
        ("llama::custom_sdpa.out", [1.0, 0.004]),
        ("llama::update_cache.out", [1.0, 0.001]),
        ("native_call_cat.out", [1.0, 0.001]),
    ]
    parts = summarize(events, prefill_calls=1, first_position=0).breakdown()
    assert parts == pytest.approx(
        {
            "step": 20.0,
            "GEMMs": 5.0 + 2.0,
            "other XNNPACK": 12.0 - 7.0,  # the multiply and the delegate time outside its operators
            "attention": 4.0,
            "other CPU ops": 6.0 - 4.0,  # cache update and cat
        }
    )


def test_steps_are_the_method_calls_and_repeated_events_count_per_call() -> None:
    """An operator name that fires twice per call has twice the samples: the step count still
    comes from the method's calls, and the operator counts as two calls per step."""
    events = [
        ("Method::execute", [9.0, 0.010, 0.010, 0.010, 0.010]),  # prefill + 4 decode calls
        ("Static Reshape (NC)", [0.5] + [0.002] * 8),  # twice per decode call
    ]
    profile = summarize(events, prefill_calls=1, first_position=0)
    assert profile.steps == 4
    (reshape,) = profile.ops
    assert (reshape.calls_per_step, reshape.us_per_step) == (2, pytest.approx(4.0))


def test_a_preempted_call_is_left_out() -> None:
    times = [0.0] + [0.001] * 9 + [0.5]  # prefill, nine 1-us calls and one stalled call
    profile = summarize([("Method::execute", times)], prefill_calls=1, first_position=0)
    assert profile.step_us == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no decode calls"):
        summarize([("Method::execute", [1.0])], prefill_calls=1, first_position=0)


def test_operator_kinds() -> None:
    assert is_cpu_operator("native_call_cat.out") and is_cpu_operator("llama::update_cache.out")
    assert not is_cpu_operator("Fully Connected (NC, F32) GEMM")


def test_a_traced_program_reports_its_delegated_linears(tmp_path) -> None:
    torch.manual_seed(0)
    pte = tmp_path / "tiny.pte"
    pte.write_bytes(
        export_to_executorch_with_xnnpack(CachedTinyLm(VOCAB, HIDDEN, CONTEXT, MAX_SEQ_LEN).eval()).buffer
    )
    # Prefill in 3 chunks of 4. The runner metadata's 5 constant methods run at load, traced
    # in a block of their own, which must not count as steps.
    profile = profile_decode(pte, prompt_len=10, steps=5)
    assert profile.steps == 5 and profile.first_position == 10
    kinds = {op.name: op for op in profile.ops}
    gemms = [op for name, op in kinds.items() if name.startswith("Fully Connected")]
    assert sum(op.calls_per_step for op in gemms) == 2  # mix and head, once per step
    assert profile.step_us > 0 and profile.delegate_calls_us > 0
    assert profile.delegate_calls_us + profile.operator_calls_us <= 1.1 * profile.step_us
    with pytest.raises(ValueError, match="exceeds the context of 24"):
        profile_decode(pte, prompt_len=20, steps=5)


def test_programs_traced_in_turns_each_get_their_own_profile(tmp_path) -> None:
    """Two programs taking turns: each profile counts its own steps and operators only."""
    torch.manual_seed(0)
    small, large = tmp_path / "small.pte", tmp_path / "large.pte"
    small.write_bytes(
        export_to_executorch_with_xnnpack(CachedTinyLm(VOCAB, HIDDEN, CONTEXT, MAX_SEQ_LEN).eval()).buffer
    )
    large.write_bytes(
        export_to_executorch_with_xnnpack(CachedTinyLm(VOCAB, 4 * HIDDEN, CONTEXT, MAX_SEQ_LEN).eval()).buffer
    )
    profiles = profile_decodes([small, large], prompt_len=10, steps=5)
    for profile in profiles:
        assert profile.steps == 5 and profile.first_position == 10
        gemms = [op for op in profile.ops if op.name.startswith("Fully Connected")]
        assert sum(op.calls_per_step for op in gemms) == 2
    with pytest.raises(ValueError, match="exceeds the context of 24"):
        profile_decodes([small, large], prompt_len=20, steps=5)
