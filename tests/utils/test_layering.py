"""xnnpack, utils and runtime sit at the bottom of the dependency graph (DESIGN.md)."""

import ast
from pathlib import Path

import pytest

import executorch_optimum.runtime
import executorch_optimum.utils
import executorch_optimum.xnnpack

UPPER_LAYERS = ("caches", "sdpa", "modules", "kernels", "export")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "package", [executorch_optimum.xnnpack, executorch_optimum.utils, executorch_optimum.runtime]
)
def test_bottom_packages_import_no_upper_layer(package):
    files = sorted(Path(package.__file__).parent.glob("*.py"))
    assert len(files) > 1
    for path in files:
        for name in _imports(path):
            parts = name.split(".")
            assert not (parts[0] == "executorch_optimum" and len(parts) > 1 and parts[1] in UPPER_LAYERS), (
                f"{path.name} imports {name}"
            )
            if package is executorch_optimum.runtime:
                assert parts[0] != "transformers", f"the runtime must not import transformers ({path.name})"
