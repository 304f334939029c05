"""The whole pipeline as one call: checkpoint directory + options -> .pte + report.

load (safetensors only) -> quantize (torchao) -> wrap (our caches + SDPA) -> torch.export
-> XNNPACK lowering -> serialise, each phase timed and reported through `progress`.
Outputs are written atomically: a failed or interrupted export leaves no file behind.

Tasks: `text-generation` (a causal LM -> `CausalLMExportableModule`, method `forward`) and
`image-text-to-text` (Gemma 3's `Gemma3ForConditionalGeneration`, `LlavaForConditionalGeneration`
-> `ImageTextToTextExportableModule`, methods `token_embedding`, `vision_encoder`,
`text_decoder` for ExecuTorch's MultimodalRunner, plus the image preprocessing (from the
checkpoint's `preprocessor_config.json` when present) and Gemma 3's `boi_token_id`/`eoi_token_id`
as metadata, so a runner can preprocess images and expand placeholders as the processor does).
A checkpoint given the other task's name fails with a one-line error naming the right task.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

TEXT_GENERATION = "text-generation"
IMAGE_TEXT_TO_TEXT = "image-text-to-text"
TASKS = (TEXT_GENERATION, IMAGE_TEXT_TO_TEXT)
RECIPES = ("xnnpack",)
DTYPES = {"float32": torch.float32, "fp32": torch.float32}
# The KV cache's element type; float16 (opt-in) halves the cache and what a decode step reads
# from it, and rounds every cached key and value.
KV_CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# model_type -> covered by the parity tests
SUPPORTED_ARCHITECTURES = ("gemma", "gemma2", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3")
# model_type -> image-text-to-text, covered by tests/multimodal and tests/tools
SUPPORTED_MULTIMODAL_ARCHITECTURES = ("gemma3", "llava")
MAX_SEQ_LEN_RANGE = (1, 32768)


class ExportError(Exception):
    """Bad input or an unsupported request: one line for the user, no traceback."""


@dataclass
class ExportOptions:
    model_dir: Path
    output: Path
    task: str = "text-generation"
    recipe: str = "xnnpack"
    use_custom_sdpa: bool = True
    use_custom_kv_cache: bool = True
    qlinear: str | None = None
    qlinear_group_size: int = 32
    qembedding: str | None = None
    qembedding_group_size: int = 0
    max_seq_len: int = 128
    max_context_len: int | None = None
    dtype: str = "float32"
    allow_pickle: bool = False
    report: Path | None = None
    last_logits_only: bool = True
    native_kernels: bool = False
    kv_cache_dtype: str = "float32"


@dataclass
class ExportResult:
    pte: Path
    size_bytes: int
    metadata: dict
    delegation: str
    timings: dict[str, float] = field(default_factory=dict)


Progress = Callable[[str], None]


@contextmanager
def _phase(name: str, timings: dict[str, float], progress: Progress) -> Iterator[None]:
    progress(f"[{name}] ...")
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    progress(f"[{name}] done in {timings[name]:.1f} s")


def _atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Writes bytes, or lets a writer stream into the file (no whole-file copy in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate(options: ExportOptions, check_model_dir: bool = True) -> None:
    """Every check that needs no model: bad input fails before any work."""
    if options.task not in TASKS:
        raise ExportError(f"unsupported task '{options.task}' (supported: {', '.join(TASKS)})")
    if options.recipe not in RECIPES:
        raise ExportError(f"unsupported recipe '{options.recipe}' (supported: {', '.join(RECIPES)})")
    if options.dtype not in DTYPES:
        raise ExportError(f"unsupported dtype '{options.dtype}' (supported: {', '.join(DTYPES)})")
    low, high = MAX_SEQ_LEN_RANGE
    if not low <= options.max_seq_len <= high:
        raise ExportError(f"--max_seq_len must be in [{low}, {high}], got {options.max_seq_len}")
    if options.max_context_len is not None and options.max_context_len < options.max_seq_len:
        raise ExportError(
            f"--max_context_len ({options.max_context_len}) must be >= --max_seq_len ({options.max_seq_len})"
        )
    if options.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ExportError(
            f"unsupported --kv_cache_dtype '{options.kv_cache_dtype}' (supported: {', '.join(KV_CACHE_DTYPES)})"
        )
    if options.kv_cache_dtype != "float32" and not options.native_kernels:
        raise ExportError(
            f"--kv_cache_dtype {options.kv_cache_dtype} needs --native_kernels: ExecuTorch's own cache and "
            "attention ops take caches of the model's dtype only"
        )
    if not options.use_custom_kv_cache:
        raise ExportError("--use_custom_kv_cache is required: the ExecuTorch caches are what update in place")
    if options.task == IMAGE_TEXT_TO_TEXT:
        if not options.last_logits_only:
            raise ExportError("--full_logits is not supported for --task image-text-to-text")
    _validate_output(options.output)
    if options.report is not None:
        _validate_output(options.report)
    _validate_quantization(options)
    if check_model_dir:
        _validate_model_dir(options)


def _validate_model_dir(options: ExportOptions) -> None:
    model_dir = options.model_dir
    if not model_dir.is_dir():
        raise ExportError(f"model directory not found: {model_dir}")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"no config.json in {model_dir}")
    if not list(model_dir.glob("*.safetensors")):
        pickles = list(model_dir.glob("*.bin")) + list(model_dir.glob("*.pt"))
        if pickles and not options.allow_pickle:
            raise ExportError(
                f"{model_dir} holds only pickle weights ({pickles[0].name}); they can run code when loaded. "
                "Convert them to safetensors, or pass --allow_pickle if you trust them"
            )
        if not pickles:
            raise ExportError(f"no *.safetensors weights in {model_dir}")


def _validate_output(path: Path) -> None:
    if path.is_dir():
        raise ExportError(f"output is a directory, expected a file path: {path}")
    out_dir = path.parent
    if out_dir.is_dir():
        # Make a file there and remove it: permission bits say nothing for root, nor for
        # read-only mounts and pseudo filesystems, where the export would fail only at its end.
        try:
            fd, probe_file = tempfile.mkstemp(prefix=".eo_probe_", dir=out_dir)
            os.close(fd)
            os.unlink(probe_file)
        except OSError as err:
            raise ExportError(f"output directory is not writable: {out_dir} ({err.strerror})") from None
        return
    probe = next((p for p in out_dir.parents if p.exists()), Path("/"))
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ExportError(f"output directory is not writable: {out_dir}")


def _validate_quantization(options: ExportOptions) -> None:
    if options.qlinear or options.qembedding:
        from executorch_optimum.xnnpack import QuantizationConfig

        try:
            QuantizationConfig(
                qlinear=options.qlinear,
                qlinear_group_size=options.qlinear_group_size,
                qembedding=options.qembedding,
                qembedding_group_size=options.qembedding_group_size,
            ).validate()
        except ValueError as err:
            raise ExportError(str(err)) from None


def _release_checkpoint_file(model: torch.nn.Module) -> None:
    """Copies the tensors quantization left as they were (norms, biases) off the checkpoint.

    Loaded weights are views into the memory-mapped safetensors file, and one live view keeps
    the whole mapping, so the float weights that quantization replaced stayed resident (about
    the model's float size) through lowering; with no view left, the mapping closes.
    """
    for tensor in [*model.parameters(), *model.buffers()]:
        if type(tensor) in (torch.Tensor, torch.nn.Parameter):  # quantized ones are subclasses
            tensor.data = tensor.data.clone()
    gc.collect()


def _load_model(options: ExportOptions) -> torch.nn.Module:
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(options.model_dir, local_files_only=True)
    except (ValueError, OSError, KeyError) as err:
        raise ExportError(f"cannot read {options.model_dir / 'config.json'}: {err}") from None
    model_type = getattr(config, "model_type", "?")
    _check_architecture(model_type, options.task)
    vision = getattr(config, "vision_config", None)
    if options.task == IMAGE_TEXT_TO_TEXT and options.qlinear and getattr(vision, "vision_use_head", False):
        # torchao's quantized weights cannot go through nn.MultiheadAttention (SigLIP's pooling
        # head), whose output Gemma 3 never uses; real Gemma 3 configs turn it off.
        raise ExportError(
            "--qlinear cannot quantize the vision tower's pooling head (vision_config.vision_use_head "
            "is true in config.json); Gemma 3 does not use it: set it to false"
        )
    auto_class = (
        transformers.AutoModelForImageTextToText
        if options.task == IMAGE_TEXT_TO_TEXT
        else transformers.AutoModelForCausalLM
    )
    model = auto_class.from_pretrained(
        options.model_dir,
        local_files_only=True,
        use_safetensors=not options.allow_pickle,
        dtype=DTYPES[options.dtype],
        attn_implementation="eager",
    )
    return model.eval()


def _check_architecture(model_type: str, task: str) -> None:
    """One line naming the right task when a checkpoint is given the other task."""
    if task == IMAGE_TEXT_TO_TEXT:
        if model_type in SUPPORTED_MULTIMODAL_ARCHITECTURES:
            return
        if model_type in SUPPORTED_ARCHITECTURES:
            raise ExportError(
                f"'{model_type}' is a text-only architecture: export it with --task {TEXT_GENERATION} "
                f"(image-text-to-text supports: {', '.join(SUPPORTED_MULTIMODAL_ARCHITECTURES)})"
            )
        supported = SUPPORTED_MULTIMODAL_ARCHITECTURES
    else:
        if model_type in SUPPORTED_ARCHITECTURES:
            return
        if model_type in SUPPORTED_MULTIMODAL_ARCHITECTURES:
            raise ExportError(
                f"'{model_type}' is an image-text-to-text checkpoint: export it with --task {IMAGE_TEXT_TO_TEXT}"
            )
        supported = SUPPORTED_ARCHITECTURES
    raise ExportError(
        f"unsupported architecture '{model_type}' for {task} (supported: {', '.join(supported)})"
    )


def _wrap(model: torch.nn.Module, options: ExportOptions) -> torch.nn.Module:
    """The task's exportable module (it carries its runner metadata)."""
    from executorch_optimum.modules import CausalLMExportableModule, ImageTextToTextExportableModule

    if options.task != IMAGE_TEXT_TO_TEXT:
        module = CausalLMExportableModule(
            model,
            max_seq_len=options.max_seq_len,
            max_context_len=options.max_context_len,
            use_custom_kv_cache=options.use_custom_kv_cache,
            use_custom_sdpa=options.use_custom_sdpa,
            last_logits_only=options.last_logits_only,
            native_kernels=options.native_kernels,
            kv_cache_dtype=KV_CACHE_DTYPES[options.kv_cache_dtype],
        )
        return module
    processor = _read_processor_config(options.model_dir)
    try:
        module = ImageTextToTextExportableModule(
            model,
            max_seq_len=options.max_seq_len,
            max_context_len=options.max_context_len,
            use_custom_kv_cache=options.use_custom_kv_cache,
            use_custom_sdpa=options.use_custom_sdpa,
            processor_config=processor,
            native_kernels=options.native_kernels,
            kv_cache_dtype=KV_CACHE_DTYPES[options.kv_cache_dtype],
        )
    except (NotImplementedError, ValueError) as err:
        raise ExportError(str(err)) from None
    if options.max_seq_len < module.tokens_per_image:
        raise ExportError(
            f"--max_seq_len ({options.max_seq_len}) must be >= the {module.tokens_per_image} tokens of "
            "one image: ExecuTorch's MultimodalRunner feeds an image's embeddings in one text_decoder call"
        )
    return module


def _read_processor_config(model_dir: Path) -> dict:
    """The checkpoint's preprocessor_config.json (image mean/std, resample, size), if any."""
    path = Path(model_dir) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{path}: unreadable image processor config ({err})") from None
    return data if isinstance(data, dict) else {}


def export_model(options: ExportOptions, progress: Progress = print) -> ExportResult:
    """Runs the pipeline; raises ExportError for bad input (before any output exists)."""
    validate(options)
    from executorch_optimum.xnnpack import QuantizationConfig, export_to_executorch_with_xnnpack

    timings: dict[str, float] = {}
    with _phase("load", timings, progress):
        model = _load_model(options)
    # Quantized only: fp32 decode streams the same bytes either way (measured 0.998x), and the
    # fused fp32 weights would stay in memory through lowering.
    if options.native_kernels and options.qlinear:
        with _phase("fuse", timings, progress):
            from executorch_optimum.modules import fuse_attention_inputs

            fused = fuse_attention_inputs(model)
        progress(f"  ({fused} attention layers compute q, k and v in one linear)")
    quantize = None
    if options.qlinear or options.qembedding:
        quantize = QuantizationConfig(
            qlinear=options.qlinear,
            qlinear_group_size=options.qlinear_group_size,
            qembedding=options.qembedding,
            qembedding_group_size=options.qembedding_group_size,
        )
        with _phase("quantize", timings, progress):
            try:
                quantize.check_model(model)
            except ValueError as err:
                raise ExportError(str(err)) from None
            from executorch_optimum.xnnpack import apply_quantization_

            apply_quantization_(model, quantize)
            _release_checkpoint_file(model)
    with _phase("wrap", timings, progress):
        module = _wrap(model, options)
    with _phase("export+lower", timings, progress):
        # Weight blobs wait beside the output (it needs that space anyway), not in memory.
        lowered = export_to_executorch_with_xnnpack(module, spill_dir=options.output.parent)
        steps = ", ".join(
            f"{name.removesuffix('_s')} {seconds:.1f} s" for name, seconds in lowered.timings.items()
        )
        progress(f"  ({steps})")
    with _phase("serialise", timings, progress):
        # Streamed: `lowered.buffer` would first join the whole program (weights included)
        # into one more copy in memory, the export's peak.
        _atomic_write(options.output, lowered.program.write_to_file)
        size_bytes = options.output.stat().st_size
    report = {
        "pte": options.output.name,
        "size_bytes": size_bytes,
        "metadata": lowered.metadata,
        "delegation": json.loads(lowered.report.to_json()),
        # Paths by name only: the same export from another directory or machine gives the
        # same report bytes (a build cache depends on it).
        "options": {
            k: v.name if isinstance(v, Path) else v for k, v in asdict(options).items() if k != "report"
        },
    }
    if options.report is not None:
        _atomic_write(options.report, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return ExportResult(options.output, size_bytes, lowered.metadata, lowered.report.to_table(), timings)
