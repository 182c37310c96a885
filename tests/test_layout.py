"""The package's layers: the core is pure JAX, and no module imports the
package inside a function (the sign of an import cycle)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "numpyro_ebm"


def _imports(path):
    """``(top-level imported module names, function-local ones)``."""
    tree = ast.parse(path.read_text())
    top, local = set(), set()

    def names(node):
        if isinstance(node, ast.Import):
            return {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            return {node.module}
        return set()

    for node in tree.body:
        top |= names(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                local |= names(inner)
    return top, local


def test_the_core_imports_only_jax_numpy_and_itself():
    allowed = ("jax", "numpy", "numpyro_ebm.core")
    for path in sorted((PACKAGE / "core").glob("*.py")):
        top, local = _imports(path)
        for name in top | local:
            root = name.split(".")[0]
            if root in ("jax", "numpy", "numpyro_ebm"):
                assert name.startswith(allowed), f"{path.name} imports {name}"
            else:  # the standard library
                assert root not in ("numpyro", "flax", "optax", "orbax", "arviz"), (
                    f"{path.name} imports {name}"
                )


def test_no_module_imports_the_package_inside_a_function():
    for path in sorted(PACKAGE.rglob("*.py")):
        _, local = _imports(path)
        inner = sorted(n for n in local if n.split(".")[0] == "numpyro_ebm")
        assert not inner, f"{path.relative_to(PACKAGE)} imports {inner} in a function"
