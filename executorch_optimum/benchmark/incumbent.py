"""The incumbent exporter: optimum-executorch 1.1.0, run in a venv of its own.

optimum-executorch 1.1.0 pins transformers==5.0.0rc1 (we use 5.24), so it cannot share our
environment. `ensure_incumbent_venv` builds, once per content of `incumbent.lock` (every
package pinned; torch, executorch and torchao are the same versions as ours), a virtualenv
under ``~/.cache/executorch_optimum/incumbent`` and `IncumbentExporter` runs the incumbent's
own CLI in it, as a user would::

    optimum-cli export executorch --model CKPT --task text-generation --recipe xnnpack \\
        --use_custom_sdpa --use_custom_kv_cache [--qlinear 8da4w --qembedding 8w] --output_dir OUT

offline, measuring that child's wall time, CPU time (user + sys) and peak RSS (`os.wait4`).

What the incumbent's .pte is (optimum-executorch 1.1.0 on executorch 1.5.1):

- ``forward(input_ids [1, S] int64, cache_position [S] int64) -> logits [1, S, vocab] float32``
  with 1 <= S <= get_max_seq_len() - 1 (dynamic); prefill returns the logits of every
  position, not only the last. The KV cache (``llama::update_cache`` into a static cache of
  get_max_seq_len() positions) lives in the program's mutable buffers.
- constant methods: get_max_seq_len (2048 unless ``--max_seq_len``: the CLI's default is 2048,
  not the config's max_position_embeddings as its --help says), get_max_batch_size (1),
  get_bos_id, get_eos_id, get_vocab_size, get_n_layers, get_n_kv_heads, get_head_dim (a
  float), get_dtype, use_kv_cache, use_sdpa_with_kv_cache, enable_dynamic_shape. There is no
  get_max_context_len: context = get_max_seq_len.
- it calls ``llama::custom_sdpa.out`` and ``llama::update_cache.out`` (and, quantized,
  ``quantized_decomposed::embedding_byte.out``) outside the XNNPACK delegate, so the runtime
  process must load those kernels first: see `incumbent_runtime_imports`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from executorch_optimum.runtime.threads import without_our_openmp_setting

Progress = Callable[[str], None]

LOCK_FILE = Path(__file__).resolve().with_name("incumbent.lock")
DEFAULT_CACHE_ROOT = Path("~/.cache/executorch_optimum/incumbent")
INCUMBENT_NAME = "optimum-executorch 1.1.0"
# The interpreter the lock was resolved for (its torch wheel is cp311).
PYTHON_VERSION = (3, 11)
PYTHON_NAME = f"python{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}"

# variant -> the incumbent CLI's quantization flags
VARIANT_FLAGS: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "8da4w": ("--qlinear", "8da4w", "--qembedding", "8w"),
}
PTE_NAME = "model.pte"  # what the incumbent writes into --output_dir

# Modules whose import registers, in this process's ExecuTorch runtime, the non-delegated
# kernels the incumbent's .pte calls (import them before loading the program):
# - custom_ops loads libcustom_ops_aot_lib.so: llama::custom_sdpa.out, llama::update_cache.out
#   (and the matching torch.ops.llama.* ops). The package `executorch.extension.llm.custom_ops`
#   alone registers nothing: the `custom_ops` submodule does.
# - kernels.quantized loads libquantized_ops_aot_lib.so: quantized_decomposed::embedding_byte.out
#   and friends (the 8da4w variant's `--qembedding 8w` embedding; fp32 does not need it).
INCUMBENT_RUNTIME_MODULES = (
    "executorch.extension.llm.custom_ops.custom_ops",
    "executorch.kernels.quantized",
)

_READY = "incumbent-ready"  # marker file in a finished venv: the lock's hash


class IncumbentError(RuntimeError):
    """The incumbent's venv or export failed; the message is one line ending in the log tail."""


@dataclass(frozen=True)
class ExportMeasurement:
    pte: Path
    wall_s: float
    cpu_s: float  # user + sys of the export process (and the children it waited for)
    peak_rss_bytes: int
    log: str  # the child's stdout and stderr, merged


def incumbent_runtime_imports() -> tuple[str, ...]:
    """Imports (once) and returns the modules that register the incumbent .pte's custom kernels.

    Call in the process that runs the .pte, before `Runtime.get().load_program(...)`; without
    them loading ``forward`` fails with ``Missing operator: llama::custom_sdpa.out``.
    Each library registers its kernels at most once per process (Python's import cache).
    """
    for name in INCUMBENT_RUNTIME_MODULES:
        importlib.import_module(name)
    return INCUMBENT_RUNTIME_MODULES


def lock_digest(lock_file: Path = LOCK_FILE) -> str:
    """Key of the venv: the lock file's content and the interpreter's minor version."""
    if not lock_file.is_file():
        raise IncumbentError(f"{lock_file} not found (under Bazel: add incumbent.lock to the target's data)")
    h = hashlib.sha256(lock_file.read_bytes())
    h.update(PYTHON_NAME.encode())
    return h.hexdigest()[:16]


def base_interpreter() -> Path:
    """The real python3.11 behind `sys.executable` (which may itself be a venv's python)."""
    if sys.version_info[:2] != PYTHON_VERSION:
        raise IncumbentError(
            f"the incumbent's lock is for {PYTHON_NAME}; this is python{sys.version_info[0]}.{sys.version_info[1]}"
        )
    base_exe = getattr(sys, "_base_executable", None)
    candidates = [
        Path(base_exe) if base_exe else None,
        Path(sys.base_prefix) / "bin" / PYTHON_NAME,
        Path(sys.base_prefix) / "bin" / "python3",
        Path(sys.executable),
    ]
    for candidate in candidates:
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise IncumbentError(f"no {PYTHON_NAME} found under {sys.base_prefix}")


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment minus whatever would put our packages in the incumbent's way."""
    env = {
        k: v
        for k, v in without_our_openmp_setting(dict(os.environ)).items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    }
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra or {})
    return env


def _run(cmd: Sequence[str], env: dict[str, str], log_path: Path, what: str) -> None:
    """Runs a setup step, its output appended to log_path; raises with the tail on failure."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(
            list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    if rc != 0:
        raise IncumbentError(f"{what} failed (exit {rc}): {_tail(log_path.read_text(errors='replace'))}")


def _tail(text: str, lines: int = 6, chars: int = 600) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    tail = " | ".join(kept)
    return tail[-chars:] if tail else "(no output)"


@contextlib.contextmanager
def _flock(path: Path, progress: Progress) -> Iterator[None]:
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"[incumbent] waiting for another process building {path.stem}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_ready(venv: Path, digest: str) -> bool:
    marker = venv / _READY
    return marker.is_file() and marker.read_text().strip() == digest and venv_python(venv).exists()


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_incumbent_venv(cache_root: Path | None = None, progress: Progress = print) -> Path:
    """Returns the incumbent's venv, building it first if this lock has none yet.

    The venv is ``CACHE_ROOT/venv-<digest>`` (digest: `lock_digest`). It is built in
    ``venv-<digest>.partial`` (python3.11 -m venv, then ``pip install --no-deps -r
    incumbent.lock`` and ``pip check``) and renamed into place only when complete, under an
    exclusive flock so concurrent callers build it once. A venv is not relocatable: its
    console scripts keep the .partial path in their shebangs, so run its tools as
    ``venv/bin/python -m ...`` (as this module does), never as ``venv/bin/optimum-cli``.
    """
    root = (cache_root or DEFAULT_CACHE_ROOT).expanduser()
    digest = lock_digest()
    venv = root / f"venv-{digest}"
    if _is_ready(venv, digest):
        return venv
    root.mkdir(parents=True, exist_ok=True)
    with _flock(root / f"venv-{digest}.lock", progress):
        if _is_ready(venv, digest):  # built by whoever held the lock before us
            return venv
        if venv.exists():  # not ours to trust: no marker, or another lock's
            shutil.rmtree(venv)
        partial = root / f"venv-{digest}.partial"
        if partial.exists():  # a build that died; we hold the lock, so nobody is writing it
            shutil.rmtree(partial)
        log_path = root / f"venv-{digest}.log"
        log_path.write_text("")
        progress(f"[incumbent] building the {INCUMBENT_NAME} venv in {venv} (once; a few minutes)")
        start = time.perf_counter()
        env = _clean_env()
        _run(
            [str(base_interpreter()), "-m", "venv", str(partial)],
            env,
            log_path,
            "creating the incumbent venv",
        )
        python = str(venv_python(partial))
        pip = [python, "-m", "pip", "--disable-pip-version-check"]
        _run(
            [*pip, "install", "--no-deps", "--no-input", "-r", str(LOCK_FILE)],
            env,
            log_path,
            f"pip install -r {LOCK_FILE.name}",
        )
        _run(
            [*pip, "check"], env, log_path, f"pip check of the incumbent venv (is {LOCK_FILE.name} complete?)"
        )
        _run(
            [python, "-c", "import optimum.exporters.executorch, executorch.exir, torch, transformers"],
            env,
            log_path,
            "importing optimum-executorch in its venv",
        )
        (partial / _READY).write_text(digest + "\n")
        os.rename(partial, venv)
        progress(f"[incumbent] venv ready in {time.perf_counter() - start:.0f} s")
    return venv


def _run_measured(cmd: Sequence[str], env: dict[str, str], log_path: Path) -> tuple[int, float, float, int]:
    """Runs cmd with its output to log_path; (exit code, wall s, cpu s, peak RSS bytes) of it."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    # ru_maxrss is KiB on Linux: the peak of the child or of the largest descendant it waited for.
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


class IncumbentExporter:
    """optimum-executorch 1.1.0's `optimum-cli export executorch`, XNNPACK recipe, measured.

    max_seq_len None keeps the incumbent's default (2048 positions of context and static KV
    cache, whatever the model's max_position_embeddings); an int passes ``--max_seq_len``.
    """

    name = INCUMBENT_NAME

    def __init__(
        self,
        cache_root: Path | None = None,
        max_seq_len: int | None = None,
        progress: Progress = print,
    ) -> None:
        self.cache_root = cache_root
        self.max_seq_len = max_seq_len
        self.progress = progress

    def cache_key(self) -> str:
        """Changes whenever the same checkpoint and variant could export differently."""
        return f"incumbent-{lock_digest()}-seq{self.max_seq_len or 'default'}"

    def command(self, python: Path, checkpoint_dir: Path, variant: str, output_dir: Path) -> list[str]:
        if variant not in VARIANT_FLAGS:
            raise ValueError(f"unknown variant {variant!r}; the incumbent has {sorted(VARIANT_FLAGS)}")
        cmd = [
            str(python),
            "-m",
            "optimum.commands.optimum_cli",  # = optimum-cli (whose shebang the venv's move broke)
            "export",
            "executorch",
            "--model",
            str(checkpoint_dir),
            "--task",
            "text-generation",
            "--recipe",
            "xnnpack",
            "--use_custom_sdpa",
            "--use_custom_kv_cache",
            *VARIANT_FLAGS[variant],
        ]
        if self.max_seq_len is not None:
            cmd += ["--max_seq_len", str(self.max_seq_len)]
        return [*cmd, "--output_dir", str(output_dir)]

    def export(
        self, checkpoint_dir: Path, variant: str, out_dir: Path, progress: Progress | None = None
    ) -> ExportMeasurement:
        """Exports checkpoint_dir as variant ("fp32" or "8da4w") to ``out_dir/model.pte``.

        The incumbent writes into a scratch directory inside out_dir; its .pte is moved into
        place only after a clean exit, so a failed export leaves no .pte (its log stays in
        ``out_dir/incumbent-<variant>.log``). Raises IncumbentError with the log's tail.
        """
        progress = progress or self.progress
        checkpoint_dir = Path(checkpoint_dir).resolve()
        out_dir = Path(out_dir).resolve()
        if not (checkpoint_dir / "config.json").is_file():
            raise IncumbentError(f"{checkpoint_dir} has no config.json")
        venv = ensure_incumbent_venv(self.cache_root, progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        pte = out_dir / PTE_NAME
        with contextlib.suppress(FileNotFoundError):
            pte.unlink()
        scratch = out_dir / f".incumbent-{variant}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        log_path = out_dir / f"incumbent-{variant}.log"
        cmd = self.command(venv_python(venv), checkpoint_dir, variant, scratch)
        env = _clean_env(
            {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        progress(f"[incumbent] {self.name}: exporting {checkpoint_dir.name} ({variant})")
        try:
            rc, wall, cpu, rss = _run_measured(cmd, env, log_path)
            log = log_path.read_text(errors="replace")
            produced = scratch / PTE_NAME
            if rc != 0 or not produced.is_file():
                why = f"exit {rc}" if rc != 0 else f"exit 0 but no {PTE_NAME}"
                raise IncumbentError(
                    f"{self.name} export of {checkpoint_dir.name} ({variant}) failed ({why}; "
                    f"log {log_path}): {_tail(log)}"
                )
            os.replace(produced, pte)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        progress(
            f"[incumbent] {variant}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
            f"peak RSS {rss / 2**20:.0f} MiB, {pte.stat().st_size / 2**20:.1f} MiB .pte"
        )
        return ExportMeasurement(pte=pte, wall_s=wall, cpu_s=cpu, peak_rss_bytes=rss, log=log)
