"""Runs pytest files as a Bazel test: offline, seeded, writing only under TEST_TMPDIR."""

import os
import sys
import tempfile


def _hermetic_environment() -> None:
    scratch = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp(prefix="eo_test_")
    for var, sub in (
        ("HOME", "home"),
        ("XDG_CACHE_HOME", "cache"),
        ("HF_HOME", "hf"),
        ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
        ("TMPDIR", "tmp"),
    ):
        path = os.path.join(scratch, sub)
        os.makedirs(path, exist_ok=True)
        os.environ[var] = path
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    tempfile.tempdir = os.environ["TMPDIR"]


def main() -> int:
    _hermetic_environment()
    import pytest

    args = ["-p", "no:cacheprovider", "-p", "tests.support.pytest_plugin", "-q", "-rA"]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    return pytest.main(args + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
