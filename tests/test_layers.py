"""Imports run one way: coords → backends → device → autograd/tensor → kmap → functional → nn → optim,
with testing and verify on top. The kernel layer may import nothing above ``device``: a module of
``sparseconv/backends/`` that reached up (to kmap, tensor, functional, testing, ...) would make the
kernels depend on the layers they serve."""
import ast
from pathlib import Path

import sparseconv

PACKAGE = Path(sparseconv.__file__).resolve().parent
# What a module of sparseconv/backends/ may import from the package: its own layer and the two below.
BACKENDS_MAY_IMPORT = ("sparseconv.coords", "sparseconv.backends", "sparseconv.device")


def module_name(path: Path) -> str:
    """``sparseconv/backends/cuda_emulation/build.py`` → ``sparseconv.backends.cuda_emulation.build``."""
    parts = path.resolve().relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> list:
    """``(line, absolute name)`` of every import in ``source`` (in functions too), relative ones resolved.

    ``from X import a`` gives ``X.a``: ``a`` may be a submodule, and an attribute of ``X`` still
    names something under ``X``.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, f"{prefix}.{alias.name}") for alias in node.names]
    return found


def reaches_above_device(name: str) -> bool:
    """True for a name in the package that lies above the kernel layer's reach."""
    return name.split(".")[0] == "sparseconv" and not any(
        name == ok or name.startswith(ok + ".") for ok in BACKENDS_MAY_IMPORT)


def upward_imports(path: Path) -> list:
    """The imports of one module of sparseconv/backends/ that reach above ``device``."""
    names = imported_names(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    return [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}" for line, name in names
            if reaches_above_device(name)]


def test_backends_import_nothing_above_device():
    modules = sorted((PACKAGE / "backends").rglob("*.py"))
    assert len(modules) >= 10 and PACKAGE / "backends" / "cuda_emulation" / "runtime.py" in modules
    problems = [problem for path in modules for problem in upward_imports(path)]
    assert not problems, "the kernel layer imports from above it:\n" + "\n".join(problems)


def test_the_import_reader_resolves_what_the_rule_needs():
    """Relative imports at every depth, in a module and in a package, inside functions, absolute ones."""
    source = ("from .. import coords as C\nfrom . import pointwise\nfrom ...device import to_device\n"
              "def f():\n    import sparseconv.tensor\n    from ...testing import suite\n")
    names = [name for _, name in imported_names(source, "sparseconv.backends.cuda_emulation.build")]
    assert names == ["sparseconv.backends.coords", "sparseconv.backends.cuda_emulation.pointwise",
                     "sparseconv.device.to_device", "sparseconv.tensor", "sparseconv.testing.suite"]
    assert [n for n in names if reaches_above_device(n)] == ["sparseconv.tensor", "sparseconv.testing.suite"]
    in_package = imported_names("from .. import kmap\nfrom . import reference\n", "sparseconv.backends", True)
    assert [name for _, name in in_package] == ["sparseconv.kmap", "sparseconv.backends.reference"]
    assert reaches_above_device("sparseconv.kmap") and not reaches_above_device("numpy")
