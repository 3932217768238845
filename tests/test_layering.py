"""The proxy meets the streaming half only through the core's event schemas: it never imports
``streams``, ``models``, ``feature_store`` or ``jobs``. Checked on the source, by the AST."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"streams", "models", "feature_store", "jobs"}


def forbidden_imports(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] if node.level == 0 else [f"<relative>.{node.module}"]
            for name in names:
                parts = name.split(".")
                top = parts[1] if parts[0] in ("only1mcp", "<relative>") and len(parts) > 1 else parts[0]
                if top in FORBIDDEN:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_proxy_imports_nothing_from_the_streaming_half() -> None:
    assert forbidden_imports(ROOT / "proxy") == []


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("from only1mcp.streams import app\nimport only1mcp.models.latency\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(forbidden_imports(tmp_path)) == 2
    finally:
        ROOT = saved


def test_test_files_have_unique_basenames() -> None:
    """The tests folders are not packages, so pytest imports each file by its basename: two files of one
    name in different folders fail the whole run at collection (it happened once, on a clean clone)."""
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
