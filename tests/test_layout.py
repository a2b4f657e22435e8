"""Tests for the package's shape: imports point one way, from the command line down to config and
errors, and what must stay light (`textgen --help`, the render layer) imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "textgen"

# Lower layers never import higher ones; rooms of one layer do not import each other.
LAYERS = [
    {"errors"},
    {"config"},
    {"checkpoint", "devices"},
    {"tokenizers", "model", "reports"},  # reports: the records training, evaluation and insight hand back
    {"data"},  # preparing a big corpus tokenizes it
    {"evaluation"},
    {"training", "sampling", "insight"},
    {"api"},
    {"serve"},  # the HTTP front end, on the API; the library calls that start it are serve.launch's
    {"cli"},  # the command line, on the API; `textgen serve` is its shell over serve.launch
]
# The render layer draws plain data for the CLI: it may import only these (none imports torch).
RENDER_MAY_IMPORT = {"render", "reports", "checkpoint", "config", "errors"}


def room_of(module: str) -> str:
    """textgen.training.loop -> training."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(room: str) -> int:
    return next(index for index, rooms in enumerate(LAYERS) if room in rooms)


def textgen_imports(path: Path) -> set[str]:
    """Every textgen module `path` imports, at the top or inside a function."""
    module = "textgen." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("textgen.")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("textgen."):
                found.add(base)
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py" and p != PACKAGE / "__init__.py")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    source = room_of("textgen." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    for imported in textgen_imports(path):
        target = room_of(imported)
        if source == "render":
            assert target in RENDER_MAY_IMPORT, f"render imports {imported}"
        elif target != source:
            assert target != "render" or source == "cli", f"{path.name}: only the CLI draws ({imported})"
            if target != "render":
                assert layer_of(target) < layer_of(source), f"{source} imports {imported}, which is not below it"


def test_every_module_says_what_it_is_for():
    for path in modules():
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring and len(docstring) > 20, f"{path} has no docstring saying what it is for"


RENDER_MODULES = sorted("textgen.render." + p.stem for p in (PACKAGE / "render").glob("*.py") if p.stem != "__init__")


@pytest.mark.slow
@pytest.mark.parametrize("code", [
    "from textgen.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from textgen.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass",
    "import textgen.reports",
    "import " + ", ".join(RENDER_MODULES),
])
def test_help_the_records_and_the_render_layer_import_no_torch(code):
    check = code + "\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\nprint('light')"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("light"), done.stdout + done.stderr


def test_the_render_layer_is_typed_with_the_records_it_draws_not_any():
    for path in sorted((PACKAGE / "render").glob("*.py")):
        names = {node.id for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.Name)}
        assert "Any" not in names, f"{path.name} annotates with Any"


def test_an_installed_package_holds_every_room_and_the_report_template():
    """`pip install .` ships what pyproject.toml names: every subpackage, and the page template."""
    import tomllib

    from setuptools import find_packages

    settings = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    shipped = set(find_packages(str(PACKAGE.parent), include=settings["packages"]["find"]["include"]))
    rooms = {"textgen." + ".".join(p.parent.relative_to(PACKAGE).parts) for p in PACKAGE.rglob("__init__.py")
             if p.parent != PACKAGE}
    assert rooms and rooms | {"textgen"} <= shipped
    templates = settings["package-data"]["textgen.render"]
    assert any((PACKAGE / "render").glob(templates[0]))
