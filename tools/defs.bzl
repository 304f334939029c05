"""Project macros: every BUILD stanza stays one short call with our common settings."""

load("@pypi//:requirements.bzl", "requirement")
load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")

# Flags every C++ file of ours compiles with (torch 2.13 wants C++20; see .bazelrc).
EO_COPTS = [
    "-O2",
    "-fvisibility-inlines-hidden",
    "-Wall",
    "-Wno-unused-parameter",
]

def eo_py_library(name, srcs = None, deps = [], requirements = [], **kwargs):
    """A py_library of this repo; `requirements` names pinned pip packages it imports."""
    py_library(
        name = name,
        srcs = srcs if srcs != None else native.glob(["*.py"]),
        deps = deps + [requirement(r) for r in requirements],
        **kwargs
    )

def eo_py_binary(name, main, deps = [], requirements = [], **kwargs):
    py_binary(
        name = name,
        srcs = [main],
        main = main,
        deps = deps + [requirement(r) for r in requirements],
        **kwargs
    )

def eo_py_test(name, src = None, deps = [], requirements = [], size = "medium", test = "", pytest_args = [], **kwargs):
    """A pytest file as a hermetic py_test: offline, seeded, writes only to TEST_TMPDIR.

    `test` (e.g. "test_parity[llama]") or `pytest_args` (e.g. ["-k", "8da4w"]) let several
    targets share one file, so slow cases run as separate, parallel, cached targets.
    """
    src = src or name + ".py"

    # Lowering-heavy tests on a shared 2-core machine run several times slower than alone:
    # a generous timeout keeps a loaded CI from failing tests that pass.
    if "timeout" not in kwargs:
        kwargs["timeout"] = "eternal" if size in ("large", "enormous") else "long"
    py_test(
        name = name,
        srcs = [src, "//tests:pytest_main.py"],
        main = "//tests:pytest_main.py",
        args = ["$(rootpath %s)%s" % (src, "::" + test if test else "")] + pytest_args,
        deps = deps + ["//tests/support"] + [requirement(r) for r in requirements + ["pytest"]],
        size = size,
        **kwargs
    )

def py_sources(visibility = ["//tests:__subpackages__"]):
    """Exposes the package's Python files to the lint test."""
    native.filegroup(
        name = "py_srcs",
        srcs = native.glob(["*.py"]),
        visibility = visibility,
    )
