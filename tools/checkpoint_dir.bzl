"""`checkpoint_dir`: a real Hugging Face checkpoint on disk as a Bazel repository.

In WORKSPACE:

    load("//tools:checkpoint_dir.bzl", "checkpoint_dir")
    checkpoint_dir(name = "smollm2_135m_real", path = "/data/ckpt/SmolLM2-135M")

then in a BUILD file:

    executorch_export(name = "smollm2_135m_real_8da4w", checkpoint = "@smollm2_135m_real//:files",
                      qlinear = "8da4w", qembedding = "8w")

The repository symlinks the checkpoint's config, safetensors and tokenizer files and
exposes them as `:files`. Bazel keys the export on the files' contents, not on the path,
so teammates with the same checkpoint elsewhere share cache entries. A relative `path` is
relative to the workspace root. Pickle weights (*.bin) are deliberately left out.
"""

_KEEP = [
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
]

def _checkpoint_dir_impl(rctx):
    path = rctx.attr.path
    if not path.startswith("/"):
        path = "%s/%s" % (rctx.path(Label("@//:WORKSPACE")).dirname, path)
    directory = rctx.path(path)
    if not directory.get_child("config.json").exists:
        fail("checkpoint_dir(%s): no config.json in %s" % (rctx.name, directory))
    names = []
    for child in directory.readdir():
        if child.basename in _KEEP or child.basename.endswith(".safetensors"):
            rctx.symlink(child, child.basename)
            names.append(child.basename)
    if not [n for n in names if n.endswith(".safetensors")]:
        fail("checkpoint_dir(%s): no *.safetensors in %s" % (rctx.name, directory))
    rctx.file("WORKSPACE", "")
    rctx.file("BUILD.bazel", "filegroup(\n    name = \"files\",\n    srcs = %s,\n    visibility = [\"//visibility:public\"],\n)\n" % repr(sorted(names)))

checkpoint_dir = repository_rule(
    implementation = _checkpoint_dir_impl,
    attrs = {"path": attr.string(mandatory = True, doc = "the checkpoint directory")},
    local = True,
    doc = "A checkpoint directory on disk as @NAME//:files (see the module docstring).",
)
