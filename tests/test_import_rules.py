"""The package boundaries, enforced over every .py file by AST (imports inside functions included):
each package's forbidden libraries here, the layers and circles by ``tools/imports.py``; and the
torch side's save/load run with JAX blocked (``jax`` not importable)."""
from __future__ import annotations

import subprocess
import sys
import sys as _sys

import pytest

from tests.helpers import REPO
from tools.imports import imported_roots, problems, report

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


def test_no_circle_no_upward_import():
    """``python -m tools.imports``'s rules over the whole project (docs/design.md, "Layers")."""
    assert problems() == []


def _tree(root, files: dict[str, str]):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_graph_rules_catch_each_kind(tmp_path):
    """Each offence the project once had (an upward import, a sideways one, a program importing its
    chapter, a circle held by a TYPE_CHECKING import) is named; a function-local import back, and a
    test module using tests.helpers, are not offences."""
    _tree(tmp_path, {
        "quickstart_parity_common/__init__.py": "",
        "quickstart_parity_common/data.py": "import reference_torch.model\n",  # upward
        "reference_torch/__init__.py": "",
        "reference_torch/model.py": "from quickstart_parity_common import data\n",
        "reference_torch/train.py": "from .basics.distributed import step\n",  # the program on its chapter
        "reference_torch/basics/__init__.py": "",
        "reference_torch/basics/distributed.py": "from reference_torch.model import make\n",
        "jax_impl/__init__.py": "",
        "jax_impl/a.py": "from .b import x\ndef f():\n    from . import c\n",
        "jax_impl/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n",  # circle a-b
        "jax_impl/c.py": "def g():\n    from .a import x\n",  # a -> c and c -> a only inside functions
        "parity/__init__.py": "",
        "parity/run.py": "from benchmarks import timing\n",  # sideways
        "parity/test_run.py": "from tests.helpers import REPO\n",
        "benchmarks/__init__.py": "",
        "benchmarks/timing.py": "import numpy\n",
        "tests/__init__.py": "",
        "tests/helpers.py": "",
    })
    found = problems(tmp_path)
    assert len(found) == 4, found
    assert any("quickstart_parity_common.data imports reference_torch.model, a layer above" in p for p in found)
    assert any("reference_torch.train imports its own chapter reference_torch.basics.distributed" in p for p in found)
    assert any("parity.run imports benchmarks.timing, its own layer" in p for p in found)
    assert any(p.endswith("circle jax_impl.a -> jax_impl.b -> jax_impl.a") for p in found)
    listing = report(tmp_path)
    assert "-> reference_torch: reference_torch.model" in listing and "its test modules -> tests: tests.helpers" in listing


def test_the_import_graph_command():
    """``python -m tools.imports`` prints every package and says the graph is clean (exit 0)."""
    proc = subprocess.run([sys.executable, "-m", "tools.imports"], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    for pkg in ("quickstart_parity_common", "reference_torch", "jax_impl", "parity", "quickstart_parity_guide",
                "benchmarks", "tests", "tools"):
        assert f"\n{pkg}  (layer " in "\n" + proc.stdout, pkg
    assert proc.stdout.rstrip().endswith("no circle, no upward import") and proc.stderr == ""


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
