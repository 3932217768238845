"""A non-editable `pip install .` into a fresh venv imports every subpackage and runs the CLI."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["only1mcp", "only1mcp.proxy", "only1mcp.streams", "only1mcp.feature_store", "only1mcp.models",
               "only1mcp.jobs", "only1mcp.proxy.upstream", "only1mcp.proxy.routing", "only1mcp.proxy.health", "only1mcp.proxy.cache", "only1mcp.jobs.servers", "only1mcp.infra", "only1mcp.proxy.events",
               "only1mcp.feature_store.online", "only1mcp.feature_store.offline", "only1mcp.jobs.sim"]


def test_non_editable_install_imports_every_subpackage(tmp_path: Path) -> None:
    target = tmp_path / "venv"
    # Reuse this environment's already-installed dependencies; install only the project itself.
    venv.EnvBuilder(system_site_packages=False, with_pip=True).create(target)
    python = target / "bin" / "python"
    site = subprocess.check_output([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    (Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  text=True).strip()) / "deps.pth").write_text(site + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(ROOT)],
                   check=True, cwd=tmp_path)
    code = "import importlib, sys\n" + "".join(
        f"m = importlib.import_module({name!r}); assert 'site-packages' in m.__file__, m.__file__\n"
        for name in SUBPACKAGES)
    subprocess.run([str(python), "-c", code], check=True, cwd=tmp_path)
    help_text = subprocess.run([str(target / "bin" / "only1mcp"), "--help"], check=True, capture_output=True,
                               text=True, cwd=tmp_path).stdout
    for command in ("proxy", "stdio", "bench", "fixture", "config"):
        assert command in help_text
