"""The model zoo as Bazel actions: random checkpoints and ExecuTorch exports.

    load("//tools:zoo.bzl", "executorch_export", "random_checkpoint", "zoo_model")

    random_checkpoint(name = "tiny_checkpoint", config = "tiny/config.json")
    executorch_export(name = "tiny_8da4w", checkpoint = ":tiny_checkpoint",
                      qlinear = "8da4w", qembedding = "8w", max_seq_len = 32)

`executorch_export` writes NAME.pte and NAME.report.json. Its only inputs are the checkpoint
files and the exporter (with the pinned Python environment); it reads no network, no home
directory and no absolute path, and its outputs are byte-identical for the same inputs, so
it is cached locally (--disk_cache), shared (--remote_cache) and can run on build-farm
workers (--remote_executor). `checkpoint` is any label whose files are one checkpoint:
a `random_checkpoint`, a `filegroup` of files in the workspace, or a real checkpoint on disk
through `checkpoint_dir` (see checkpoint_dir.bzl).
"""

# Tools build in the host configuration, which .bazelrc makes the target one
# (--distinct_host_configuration=false): the C++ kernels are not compiled twice.

# Same environment for every zoo action, wherever it runs: no network, one thread, no
# inherited shell variables (use_default_shell_env = False).
_ACTION_ENV = {
    "HF_HUB_OFFLINE": "1",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "PATH": "/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "TRANSFORMERS_OFFLINE": "1",
}

_PY_TOOLCHAIN = "@bazel_tools//tools/python:toolchain_type"

def _action_env(ctx):
    """_ACTION_ENV, with the pinned interpreter first on PATH.

    A py_binary's stub starts with `#!/usr/bin/env python`; the interpreter is the pinned
    venv's, at the same path on every machine (see third_party/python/venv.bzl).
    """
    interpreter = ctx.toolchains[_PY_TOOLCHAIN].py3_runtime.interpreter_path
    env = dict(_ACTION_ENV)
    env["PATH"] = interpreter.rpartition("/")[0] + ":" + env["PATH"]
    return env

_CHECKPOINT_FILES = ["config.json", "model.safetensors", "tokenizer.json"]

def _random_checkpoint_impl(ctx):
    outs = [ctx.actions.declare_file("%s/%s" % (ctx.label.name, f)) for f in _CHECKPOINT_FILES]
    args = ctx.actions.args()
    args.add("--config", ctx.file.config)
    args.add("--out_dir", outs[0].dirname)
    args.add("--seed", ctx.attr.seed)
    ctx.actions.run(
        executable = ctx.attr._tool[DefaultInfo].files_to_run,
        arguments = [args],
        inputs = [ctx.file.config],
        outputs = outs,
        env = _action_env(ctx),
        use_default_shell_env = False,
        mnemonic = "RandomCheckpoint",
        progress_message = "Random checkpoint %s" % ctx.label,
    )
    return [DefaultInfo(files = depset(outs), runfiles = ctx.runfiles(files = outs))]

random_checkpoint = rule(
    implementation = _random_checkpoint_impl,
    doc = "config.json + model.safetensors (random weights, fixed seed) + tokenizer.json.",
    attrs = {
        "config": attr.label(allow_single_file = [".json"], mandatory = True),
        "seed": attr.int(default = 0),
        "_tool": attr.label(default = "//tools/zoo:make_checkpoint", executable = True, cfg = "host"),
    },
    toolchains = [_PY_TOOLCHAIN],
)

def _executorch_export_impl(ctx):
    pte = ctx.actions.declare_file(ctx.label.name + ".pte")
    report = ctx.actions.declare_file(ctx.label.name + ".report.json")
    checkpoint = ctx.files.checkpoint
    args = ctx.actions.args()
    args.add_all("--checkpoint", checkpoint, expand_directories = False)
    args.add("--checkpoint_label", str(ctx.attr.checkpoint.label))
    args.add("--output", pte)
    args.add("--report", report)
    args.add("--task", ctx.attr.task)
    args.add("--max_seq_len", ctx.attr.max_seq_len)
    if ctx.attr.max_context_len:
        args.add("--max_context_len", ctx.attr.max_context_len)
    if ctx.attr.qlinear:
        args.add("--qlinear", ctx.attr.qlinear)
        args.add("--qlinear_group_size", ctx.attr.qlinear_group_size)
    if ctx.attr.qembedding:
        args.add("--qembedding", ctx.attr.qembedding)
        args.add("--qembedding_group_size", ctx.attr.qembedding_group_size)
    ctx.actions.run(
        executable = ctx.attr._exporter[DefaultInfo].files_to_run,
        arguments = [args],
        inputs = checkpoint,
        outputs = [pte, report],
        env = _action_env(ctx),
        use_default_shell_env = False,
        mnemonic = "ExecuTorchExport",
        progress_message = "Exporting %s to ExecuTorch" % ctx.label,
    )
    return [
        DefaultInfo(files = depset([pte, report]), runfiles = ctx.runfiles(files = [pte, report])),
        OutputGroupInfo(pte = depset([pte]), report = depset([report])),
    ]

_executorch_export = rule(
    implementation = _executorch_export_impl,
    attrs = {
        "checkpoint": attr.label(allow_files = True, mandatory = True),
        "max_context_len": attr.int(default = 0),
        "max_seq_len": attr.int(default = 128),
        "qembedding": attr.string(values = ["", "8w", "4w"]),
        "qembedding_group_size": attr.int(default = 0),
        "qlinear": attr.string(values = ["", "8da4w", "8da8w", "4w", "8w"]),
        "qlinear_group_size": attr.int(default = 32),
        "task": attr.string(default = "text-generation"),
        "_exporter": attr.label(default = "//tools/zoo:export_action", executable = True, cfg = "host"),
    },
    toolchains = [_PY_TOOLCHAIN],
)

def executorch_export(
        name,
        checkpoint,
        qlinear = None,
        qembedding = None,
        max_seq_len = 128,
        max_context_len = None,
        task = "text-generation",
        **kwargs):
    """Exports `checkpoint` to NAME.pte + NAME.report.json (see the module docstring).

    max_context_len None = the model's limit, at most 2048. kwargs: qlinear_group_size,
    qembedding_group_size, tags, visibility, ...
    """
    _executorch_export(
        name = name,
        checkpoint = checkpoint,
        qlinear = qlinear or "",
        qembedding = qembedding or "",
        max_seq_len = max_seq_len,
        max_context_len = max_context_len or 0,
        task = task,
        **kwargs
    )

def zoo_model(name, config, max_seq_len = 128, max_context_len = None, manual = False, visibility = None):
    """One zoo entry: NAME_checkpoint (random weights), NAME_fp32, NAME_8da4w (8w embedding).

    `manual` keeps the large ones out of `bazel build //models/...` (lowering a 100M+
    model takes minutes and GBs); build them by name.
    """
    tags = ["manual"] if manual else []
    random_checkpoint(name = name + "_checkpoint", config = config, tags = tags, visibility = visibility)
    variants = {"fp32": {}, "8da4w": {"qembedding": "8w", "qlinear": "8da4w"}}
    for variant, quantization in variants.items():
        executorch_export(
            name = "%s_%s" % (name, variant),
            checkpoint = ":%s_checkpoint" % name,
            max_seq_len = max_seq_len,
            max_context_len = max_context_len,
            tags = tags,
            visibility = visibility,
            **quantization
        )
