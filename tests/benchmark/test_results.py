"""Results: JSON round trip, Markdown, atomic output files, ours/theirs ratios, measure."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from executorch_optimum.benchmark import compare
from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.exporters import ExportMeasurement, source_version
from executorch_optimum.benchmark.measure import run_measured
from executorch_optimum.benchmark.results import (
    BenchmarkResults,
    ContextPoint,
    ContextSweep,
    Row,
    from_json,
    to_json,
    to_markdown,
    write_outputs,
)
from executorch_optimum.benchmark.stats import Stat
from executorch_optimum.benchmark.targets import ROOFLINE_METRIC, TARGETS, check_targets


def _row(
    exporter: str, prefill: list[float], decode: list[float], wall: float = 60.0, variant: str = "fp32"
) -> Row:
    return Row(
        model="smollm2_tiny",
        variant=variant,
        exporter=exporter,
        export=ExportMeasurement(
            exporter, "fp32", "/w/model.pte", 1_100_000, wall, 42.0, 900_000_000, 40.0, 2.0, cached=True
        ),
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=decode,
        prefill_chunk=128,
        bytes_per_token=837_504,
        roofline_tokens_per_s=9000.0,
        eager_prefill_tokens_per_s=[500.0, 600.0, 700.0],
        eager_decode_tokens_per_s=[50.0, 60.0, 70.0],
        tokens_match_eager=True,
        read_roofline_tokens_per_s=12000.0,
        decode_step_tokens_per_s=[d * 1.1 for d in decode],
    )


def _results() -> BenchmarkResults:
    ours = _row("ours", [100.0, 110.0, 120.0], [20.0, 30.0, 40.0])
    theirs = _row("optimum-executorch", [50.0, 55.0, 40.0], [10.0, 10.0, 20.0], wall=120.0)
    sweep = ContextSweep("gemma3_tiny", "fp32", "ours", 16, 2048, [ContextPoint(128, Stat.of([1.0, 2.0]))])
    return BenchmarkResults(
        settings={"prompt_len": 128, "new_tokens": 128, "threads": 2, "repeats": 3},
        machine={"cores": "2"},
        bandwidth_gb_per_s=8.5,
        bandwidth_convention="read + write",
        read_bandwidth_gb_per_s=11.0,
        rows=[ours, theirs],
        ratios=compare.ratio_rows([ours, theirs], "ours", "optimum-executorch"),
        context_sweeps=[sweep],
    )


def test_json_round_trip() -> None:
    results = _results()
    text = to_json(results)
    again = from_json(text)
    assert again == results
    assert isinstance(again.rows[0].export, ExportMeasurement)
    assert isinstance(again.context_sweeps[0].points[0].decode_tokens_per_s, Stat)
    assert to_json(again) == text


def test_json_rejects_other_schema() -> None:
    with pytest.raises(BenchmarkError, match="schema"):
        from_json('{"schema_version": 99}')


def test_markdown_has_every_row_and_ratio() -> None:
    text = to_markdown(_results(), "plot.png")
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("| smollm2_tiny | fp32 | ours | 60.0")]
    assert len(table) == 1
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[3] == "60.0 (cached)"  # export wall, cached
    assert cells[4] == "42.0"  # user + sys
    assert cells[7] == "110.0 [100.0–120.0]"  # prefill median [min–max]
    assert cells[8] == "30.0 [20.0–40.0]"
    assert cells[9] == "33.0 [22.0–44.0]"  # median-step decode
    assert cells[-3] == "9000.0 / 12000.0"  # copy / read rooflines
    assert cells[-2] == "0% / 0%"  # 30 / 9000, 30 / 12000
    assert (
        "| smollm2_tiny | fp32 | ours / optimum-executorch | decode tok/s | 2.00 [2.00–3.00] | higher |"
        in text
    )
    assert "| smollm2_tiny | fp32 | ours / optimum-executorch | export wall s | 0.50 | lower |" in text
    assert "![decode tokens/s vs context](plot.png)" in text
    assert "read + write" in text


def test_ratios_pair_interleaved_repeats() -> None:
    stat = compare.paired_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 4.0])
    assert (stat.min, stat.median, stat.max) == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="pair"):
        compare.paired_ratios([1.0], [1.0, 2.0])
    ours, theirs = _row("ours", [1.0], [1.0]), _row("theirs", [1.0], [1.0])
    theirs.variant = "8da4w"
    assert compare.ratio_rows([ours, theirs], "ours", "theirs") == []


def test_write_outputs_is_all_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_outputs(out, {"a.json": b"old"})
    with pytest.raises(TypeError):
        write_outputs(out, {"a.json": b"new", "b.md": object()})  # the second file fails
    assert (out / "a.json").read_bytes() == b"old"
    assert sorted(p.name for p in out.iterdir()) == ["a.json"]  # no partial files left
    assert [p.name for p in write_outputs(out, {"a.json": b"x", "b.md": b"y"})] == ["a.json", "b.md"]
    assert (out / "b.md").read_bytes() == b"y"


def test_run_measured_reports_the_child(tmp_path: Path) -> None:
    code = (
        "import sys; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('hi'); sys.exit(3)"
    )
    lines: list[str] = []
    result = run_measured([sys.executable, "-c", code], env=dict(os.environ), on_line=lines.append)
    assert result.returncode == 3
    assert lines == ["hi"] and result.tail == ("hi",)
    assert result.peak_rss_bytes >= 300 * 2**20
    assert result.cpu_s > 0 and result.wall_s > 0


def test_foreign_exporter_is_normalised(tmp_path: Path) -> None:
    """An exporter shaped like the incumbent (its own measurement type, its own errors)."""
    from dataclasses import dataclass

    from executorch_optimum.benchmark.cli import _construct
    from executorch_optimum.benchmark.exporters import ForeignExporter

    @dataclass
    class TheirMeasurement:
        pte: Path
        wall_s: float
        cpu_s: float
        peak_rss_bytes: int
        log: str

    class Theirs:
        name = "theirs 1.0"

        def __init__(self, cache_root: Path | None = None, max_seq_len: int | None = None) -> None:
            self.max_seq_len = max_seq_len

        def cache_key(self) -> str:
            return f"theirs-{self.max_seq_len}"

        def export(
            self, checkpoint_dir: Path, variant: str, out_dir: Path, progress: object = None
        ) -> object:
            if variant == "bad":
                raise RuntimeError("their export failed\nlong log tail")
            (out_dir / "model.pte").write_bytes(b"1234")
            return TheirMeasurement(out_dir / "model.pte", 3.0, 5.0, 7, "log")

    class Args:
        max_seq_len, max_context_len, incumbent_cache = 128, 1024, None

    inner = _construct(Theirs, Args())
    assert inner.max_seq_len == 1024  # their --max_seq_len is the context length
    exporter = ForeignExporter(inner)
    got = exporter.export(tmp_path, "fp32", tmp_path)
    assert (got.exporter, got.pte_bytes, got.wall_s, got.cpu_s, got.peak_rss_bytes) == (
        "theirs 1.0",
        4,
        3.0,
        5.0,
        7,
    )
    assert got.user_s is None and exporter.cache_key() == "theirs-1024"
    with pytest.raises(BenchmarkError, match=r"^theirs 1.0: their export failed$"):
        exporter.export(tmp_path, "bad", tmp_path)
    inner.cache_key = lambda: (_ for _ in ()).throw(FileNotFoundError("lock not found\ndetails"))
    with pytest.raises(BenchmarkError, match=r"^theirs 1.0: lock not found$"):
        exporter.cache_key()


def test_targets_say_how_far_each_ratio_is() -> None:
    results = _results()
    checks = {c.target.metric: c for c in check_targets(results)}
    assert sorted(checks) == sorted(t.metric for t in TARGETS)  # fp32: every target applies
    # ours / theirs paired medians: decode [2, 3, 2], prefill [2, 2, 3]; export CPU 42 / 42.
    assert checks["decode tok/s"].value == 2.0 and checks["decode tok/s"].met
    assert checks["prefill tok/s"].met and checks["prefill tok/s"].shortfall == 1.0
    cpu = checks["export CPU s"]
    assert cpu.value == 1.0 and not cpu.met and cpu.shortfall == pytest.approx(1.0 / 0.5)
    assert checks[".pte size"].shortfall == pytest.approx(1.0 / 0.85)
    roofline = checks[ROOFLINE_METRIC]  # median decode 30 tok/s of a 9000 tok/s roofline
    assert roofline.value == pytest.approx(30.0 / 9000.0) and roofline.shortfall == pytest.approx(
        0.6 * 9000.0 / 30.0
    )
    # The decode check compares both exporters with the read roofline (30 and 10 of 12000).
    assert checks["decode tok/s"].note == (
        "read-bandwidth roofline: ours at 0%, optimum-executorch at 0%, 1.5x optimum-executorch at 0%"
    )

    text = to_markdown(results)
    assert "### Targets" in text and "2 of 6 met." in text
    assert "| smollm2_tiny | fp32 | ours | export CPU s | 1.00 | <= 0.5 | NO | 2.00x | – |" in text
    assert "| smollm2_tiny | fp32 | ours | prefill tok/s | 2.00 | >= 1.3 | yes | – | – |" in text


@pytest.mark.parametrize(
    ("read_roofline", "expected"),
    [
        (40.0, "ours at 75%, optimum-executorch at 25%, 1.5x optimum-executorch at 38%"),
        (14.0, "ours at 214%, optimum-executorch at 71%, 1.5x optimum-executorch at 107% (past the measured"),
    ],
)
def test_decode_note_puts_the_target_against_the_read_roofline(read_roofline: float, expected: str) -> None:
    results = _results()  # decode medians: ours 30, theirs 10 tok/s
    for row in results.rows:
        row.read_roofline_tokens_per_s = read_roofline
    checks = {c.target.metric: c for c in check_targets(results)}
    assert expected in checks["decode tok/s"].note


def test_decode_note_says_where_each_traced_step_goes() -> None:
    results = _results()
    ours, theirs = results.rows
    ours.decode_profile_us = {"step": 4000.0, "GEMMs": 2000.0, "attention": 500.0}
    theirs.decode_profile_us = {"step": 8000.0, "GEMMs": 2000.0, "attention": 2000.0}
    checks = {c.target.metric: c for c in check_targets(results)}
    assert checks["decode tok/s"].note.endswith(
        "; traced step: ours 4000 us: GEMMs 50%, attention 12%; "
        "optimum-executorch 8000 us: GEMMs 25%, attention 25%"
    )
    theirs.decode_profile_us = {}  # one side untraced: no comparison to make
    checks = {c.target.metric: c for c in check_targets(results)}
    assert "traced" not in checks["decode tok/s"].note
    assert from_json(to_json(results)).rows[0].decode_profile_us == ours.decode_profile_us


def test_targets_follow_the_variant() -> None:
    ours = _row("ours", [100.0], [45.0], variant="8da4w")
    theirs = _row("theirs", [100.0], [30.0], variant="8da4w")
    results = _results()
    results.rows, results.ratios = [ours, theirs], compare.ratio_rows([ours, theirs], "ours", "theirs")
    checks = check_targets(results)
    # Size and roofline targets are fp32's; a quantized file is the incumbent's scheme.
    assert [c.target.metric for c in checks] == [
        "decode tok/s",
        "prefill tok/s",
        "export CPU s",
        "export peak RSS",
    ]
    decode = checks[0]
    assert decode.value == pytest.approx(1.5) and decode.met  # the bound itself counts as met
    prefill = checks[1]
    assert not prefill.met and prefill.shortfall == pytest.approx(1.3)
    assert check_targets(_results(), targets=()) == []


def test_export_cache_key_follows_exporter_sources_only(tmp_path: Path) -> None:
    for rel in ("export/lower.py", "runtime/generator.py", "benchmark/cli.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    first = source_version(tmp_path)
    (tmp_path / "runtime/generator.py").write_text("x = 2\n")
    (tmp_path / "benchmark/cli.py").write_text("x = 2\n")
    assert source_version(tmp_path) == first
    (tmp_path / "export/lower.py").write_text("x = 2\n")
    assert source_version(tmp_path) != first
