"""`//tools:export`: bad input gets one clear line and no output; good input a working .pte."""

import json
import sys
from pathlib import Path

import pytest
import torch
import transformers

from tests.multimodal.tiny_vlm import tiny_gemma3_vlm
from tests.support.tiny_models import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import export as cli  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    tiny_model("llama").save_pretrained(path, safe_serialization=True)
    return path


def _run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _no_pte(directory: Path) -> bool:
    return not list(directory.rglob("*.pte")) and not list(directory.rglob("*.partial"))


def test_missing_dir(tmp_path, capsys):
    code, _, err = _run(capsys, "--model", str(tmp_path / "nope"), "--output_dir", str(tmp_path))
    assert code == 2 and err.strip() == f"error: model directory not found: {tmp_path / 'nope'}"
    assert _no_pte(tmp_path)


def test_no_config(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    code, _, err = _run(capsys, "--model", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path))
    assert code == 2 and "no config.json" in err and err.count("\n") == 1
    assert _no_pte(tmp_path)


def test_unsupported_architecture(tmp_path, capsys):
    ckpt = tmp_path / "bert"
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(ckpt)
    code, _, err = _run(capsys, "--model", str(ckpt), "--output_dir", str(tmp_path))
    assert code == 2 and "unsupported architecture 'bert'" in err
    assert _no_pte(tmp_path)


def test_text_only_checkpoint_with_image_task_names_the_right_task(checkpoint, tmp_path, capsys):
    code, _, err = _run(
        capsys, "--model", str(checkpoint), "--output_dir", str(tmp_path), "--task", "image-text-to-text"
    )
    assert code == 2 and err.count("\n") == 1, err
    assert "'llama' is a text-only architecture: export it with --task text-generation" in err
    assert _no_pte(tmp_path)


def test_multimodal_checkpoint_with_text_task_names_the_right_task(tmp_path, capsys):
    ckpt = tmp_path / "vlm"
    tiny_gemma3_vlm().save_pretrained(ckpt, safe_serialization=True)
    capsys.readouterr()  # save_pretrained's progress bar
    code, _, err = _run(capsys, "--model", str(ckpt), "--output_dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1, err
    assert "'gemma3' is an image-text-to-text checkpoint: export it with --task image-text-to-text" in err
    # An image needs more tokens than one decoder call takes: the stock runner could not feed it.
    code, _, err = _run(
        capsys,
        "--model",
        str(ckpt),
        "--output_dir",
        str(tmp_path),
        "--task",
        "image-text-to-text",
        "--max_seq_len",
        "2",
    )
    assert code == 2 and "--max_seq_len (2) must be >= the 4 tokens of one image" in err, err
    code, _, err = _run(
        capsys,
        "--model",
        str(ckpt),
        "--output_dir",
        str(tmp_path),
        "--task",
        "image-text-to-text",
        "--qlinear",
        "8da4w",
    )
    assert code == 2 and "vision_use_head" in err and err.count("\n") == 1, err
    assert _no_pte(tmp_path)


def test_task_help_lists_both_tasks(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "text-generation" in help_text and "image-text-to-text" in help_text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kv_cache_dtype", "float16"], "--kv_cache_dtype float16 needs --native_kernels"),
        (["--task", "summarization"], "unsupported task 'summarization'"),
        (["--recipe", "coreml"], "unsupported recipe 'coreml'"),
        (["--max_seq_len", "0"], "--max_seq_len must be in [1, 32768], got 0"),
        (
            ["--max_seq_len", "64", "--max_context_len", "32"],
            "--max_context_len (32) must be >= --max_seq_len",
        ),
        (["--qlinear", "8da4w", "--qlinear_group_size", "-4"], "group"),
    ],
)
def test_bad_options(checkpoint, tmp_path, capsys, flags, message):
    code, _, err = _run(capsys, "--model", str(checkpoint), "--output_dir", str(tmp_path), *flags)
    assert code == 2 and message in err, err
    assert _no_pte(tmp_path)


def test_unknown_quant_scheme_is_refused_by_the_parser(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", str(checkpoint), "--qlinear", "3w", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: '3w'" in capsys.readouterr().err
    assert _no_pte(tmp_path)


def test_unwritable_output(checkpoint, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = _run(capsys, "--model", str(checkpoint), "--output", str(blocker / "sub" / "m.pte"))
    assert code == 2 and "not writable" in err
    assert _no_pte(tmp_path)


def test_a_directory_that_refuses_new_files_is_caught_before_exporting(checkpoint, capsys):
    """/proc refuses new files even to root, whom its permission bits would let in."""
    code, out, err = _run(capsys, "--model", str(checkpoint), "--output", "/proc/m.pte")
    assert code == 2 and "output directory is not writable: /proc" in err, err
    assert "[export" not in out  # refused before any export work


def test_pickle_weights_are_refused_unless_allowed(tmp_path, capsys):
    ckpt = tmp_path / "pickled"
    model = tiny_model("llama")
    ckpt.mkdir()
    model.config.save_pretrained(ckpt)
    torch.save(model.state_dict(), ckpt / "pytorch_model.bin")
    code, _, err = _run(capsys, "--model", str(ckpt), "--output_dir", str(tmp_path))
    assert code == 2 and "--allow_pickle" in err
    assert _no_pte(tmp_path)


def test_failed_export_leaves_no_file(checkpoint, tmp_path, capsys, monkeypatch):
    import executorch_optimum.xnnpack as xnnpack

    def explode(*args, **kwargs):
        raise RuntimeError("lowering blew up")

    monkeypatch.setattr(xnnpack, "export_to_executorch_with_xnnpack", explode)
    code, _, err = _run(capsys, "--model", str(checkpoint), "--output_dir", str(tmp_path))
    assert code == 1 and "lowering blew up" in err and "no output written" in err
    assert _no_pte(tmp_path)


def test_export_writes_program_and_report(checkpoint, tmp_path, capsys):
    out = tmp_path / "out" / "tiny.pte"
    report = tmp_path / "out" / "tiny.json"
    code, stdout, _ = _run(
        capsys,
        "--model",
        str(checkpoint),
        "--output",
        str(out),
        "--report",
        str(report),
        "--max_seq_len",
        "8",
        "--max_context_len",
        "32",
    )
    assert code == 0
    for phase in ("[load] done", "[wrap] done", "[export+lower] done", "[serialise] done"):
        assert phase in stdout
    assert out.stat().st_size > 0
    data = json.loads(report.read_text())
    assert data["size_bytes"] == out.stat().st_size
    assert data["metadata"]["get_max_seq_len"] == 8 and data["metadata"]["get_max_context_len"] == 32

    from executorch.runtime import Runtime

    program = Runtime.get().load_program(out)
    assert "forward" in program.method_names
