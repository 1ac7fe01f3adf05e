"""The layers import downwards only (README, "How it fits together"), read from the source with ast:

    app.py, draggan/cli.py, draggan/app/    the front-ends
    inversion/edit.py (PhotoEdit)           the composition: sees the engine and the photo pipeline
    inversion/                              photos: read, align, project, tune, motion transfer
    draggan/ engine, drawing, models, loaders, runtime.py

and no import of a project module hides inside a function (the way to dodge a cycle).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWER = ["draggan/models", "draggan/loaders", "draggan/engine", "draggan/drawing", "draggan/runtime.py"]
PROJECT = ("draggan", "inversion", "app", "training", "bench")
# An entry point may import what it starts lazily, to say which extra is missing (draggan-studio -> app.py).
ENTRY_SHIMS = {"draggan/studio.py"}


def modules(*places: str) -> list[Path]:
    out = []
    for place in places:
        path = ROOT / place
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def imports(path: Path, source: str | None = None) -> list[tuple[str, bool]]:
    """(absolute module name, whether the import sits inside a function) for every import in ``path`` (or in
    ``source``, read as if it were that file)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - child.level + 1]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module
                found.append((name, in_function))
            visit(child, inner)

    visit(ast.parse(path.read_text() if source is None else source, str(path)), False)
    return found


def is_under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_import_reader_sees_relative_and_function_level_imports():
    source = "import os\nfrom .align import Alignment\nfrom . import photo\n\ndef f():\n    from draggan.engine import x\n"
    assert imports(ROOT / "inversion" / "pipeline.py", source) == [
        ("os", False), ("inversion.align", False), ("inversion", False), ("draggan.engine", True)]
    found = imports(ROOT / "inversion" / "edit.py")
    assert ("draggan.engine", False) in found and ("inversion.motion_transfer", False) in found


def test_the_engine_and_the_models_never_import_the_photo_pipeline_or_a_front_end():
    for path in modules(*LOWER):
        for name, _ in imports(path):
            assert not is_under(name, "inversion", "app", "draggan.app", "draggan.cli"), (path, name)


def test_the_photo_pipeline_never_imports_a_front_end():
    for path in modules("inversion"):
        for name, _ in imports(path):
            assert not is_under(name, "app", "draggan.app", "draggan.cli", "draggan.studio"), (path, name)


def test_only_the_composition_layer_of_inversion_drives_a_drag():
    """The drag engine's session and its live stream are driven by inversion.edit alone (the package's
    __init__ re-exports it); the rest of inversion borrows the engine's optimizer helpers at most."""
    for path in modules("inversion"):
        if path.name in ("edit.py", "__init__.py"):
            continue
        for name, _ in imports(path):
            assert not is_under(name, "inversion.edit", "draggan.engine.session", "draggan.engine.live"), (path, name)
            assert name != "draggan.engine", (path, name)


def test_no_project_import_hides_inside_a_function():
    places = LOWER + ["inversion", "draggan/app", "draggan/cli.py", "draggan/__init__.py", "app.py"]
    for path in modules(*places):
        if str(path.relative_to(ROOT)) in ENTRY_SHIMS:
            continue
        for name, in_function in imports(path):
            assert not (in_function and is_under(name, *PROJECT)), (path, name)
