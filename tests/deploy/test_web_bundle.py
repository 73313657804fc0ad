"""The web page's bundle shipped in the package (api/static/) is exactly what web/src builds.

`node web/build.mjs OUT` is deterministic (no timestamps, paths or source maps), so a stale bundle
(sources edited, `node web/build.mjs` not run) shows as a byte difference here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "api" / "static"
BUILT_FILES = {"app.js", "index.html", "style.css"}


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory, web_node_modules) -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    out = tmp_path_factory.mktemp("web-build")
    subprocess.run([node, str(ROOT / "web" / "build.mjs"), str(out)], cwd=ROOT, check=True, capture_output=True)
    return out


def test_shipped_bundle_equals_a_fresh_build(fresh_build: Path):
    assert {p.name for p in fresh_build.iterdir()} == BUILT_FILES
    assert {p.name for p in STATIC.iterdir()} == BUILT_FILES
    for name in sorted(BUILT_FILES):
        assert (STATIC / name).read_bytes() == (fresh_build / name).read_bytes(), (
            f"api/static/{name} is not what web/src builds: run `node web/build.mjs` and commit api/static/"
        )


def test_bundle_loads_nothing_from_elsewhere():
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"(?:src|href)=\"([^\"]+)\"", html) == ["data:,", "/static/style.css", "/static/app.js"]
    js = (STATIC / "app.js").read_text()
    assert set(re.findall(r"https?://[\w./-]+", js)) == {"http://www.w3.org/1999/xhtml"}  # a namespace, not a fetch
    assert "import(" not in js  # no code loaded at run time


def test_bundle_ships_in_the_package():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "static/*" in data["tool"]["setuptools"]["package-data"]["api"]
