"""The package boundaries, enforced over every .py file by AST (imports inside functions included),
and the torch side's save/load run with JAX blocked (``jax`` not importable)."""
from __future__ import annotations

import ast
import subprocess
import sys
import sys as _sys
from pathlib import Path

import pytest

from tests.helpers import REPO

_STDLIB = set(_sys.stdlib_module_names)

FORBIDDEN = {
    "reference_torch": {"jax", "jaxlib", "flax", "optax", "parity", "benchmarks", "jax_impl"},
    "jax_impl": {"torch", "torchvision", "parity", "benchmarks", "reference_torch"},
}
# quickstart_parity_common/ is numpy + stdlib + itself. The one exception: its data.py imports torchvision lazily,
# inside the function that downloads FashionMNIST, which only the torch side calls. And
# quickstart_parity_common/image_folder.py reads the tutorial's PNG folder with Pillow, which neither framework pulls in
# (a declared dependency, framework-neutral; it predates this rule). quickstart_parity_common/checkpoint.py writes and
# reads safetensors files through safetensors' numpy API: a file format, no framework.
COMMON_ALLOWED = {"numpy", "quickstart_parity_common"}
COMMON_EXCEPTIONS = {("quickstart_parity_common/data.py", "torchvision"),
                     ("quickstart_parity_common/image_folder.py", "PIL"),
                     ("quickstart_parity_common/checkpoint.py", "safetensors")}


def imported_roots(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in ``path``, at any depth; relative imports are skipped
    (they stay inside the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value.split(".")[0]))  # importlib.import_module("x")
    return out


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for line, root in imported_roots(path):
            if package == "quickstart_parity_common":
                if root not in COMMON_ALLOWED and root not in _STDLIB and (rel, root) not in COMMON_EXCEPTIONS:
                    bad.append(f"{rel}:{line} imports {root}")
            elif root in FORBIDDEN[package]:
                bad.append(f"{rel}:{line} imports {root}")
    return bad


@pytest.mark.parametrize("package", ["reference_torch", "jax_impl", "quickstart_parity_common"])
def test_package_imports(package):
    assert violations(package) == []


def test_the_rule_sees_imports_inside_functions(tmp_path):
    """The check would catch the bug this test was written for: a function-local ``from parity...``."""
    f = tmp_path / "m.py"
    f.write_text("def load():\n    from parity.weights import hidden_of\n    import jax.numpy as jnp\n")
    assert [r for _, r in imported_roots(f)] == ["parity", "jax"]


def test_torch_save_load_with_jax_blocked(tmp_path):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax'):\n"
        "            raise ImportError(name + ' is hidden')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        "from reference_torch.basics import save_load as s\n"
        "from reference_torch.model import NeuralNetwork\n"
        "torch.manual_seed(0)\n"
        "m = NeuralNetwork((32, 16))\n"
        f"s.save_safetensors(m, {str(tmp_path / 'w.safetensors')!r})\n"
        f"back = s.load_safetensors({str(tmp_path / 'w.safetensors')!r})\n"
        "assert back.hidden == (32, 16)\n"
        "assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))\n"
        f"s.save_weights(m, {str(tmp_path / 'w.pth')!r})\n"
        "assert not any(k.split('.')[0] in ('jax', 'flax', 'optax', 'parity', 'jax_impl') for k in sys.modules)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
