"""Render GLB files as a stock three.js app shows them, in headless Chromium (Playwright).

``web/tools/stock_viewer.js`` (three.js ``GLTFLoader``, the file's own materials, a hemisphere light and a
key light, no environment map) is bundled with esbuild from ``web/node_modules`` and loaded into a blank
page; each GLB goes in as base64. Used by the viewer test, the quality bench and ``docs/make_hero.py``.

    from web.tools.glb_viewer import StockViewer
    with StockViewer.launch() as viewer:          # or StockViewer(browser) with a Playwright Browser
        png_bytes, info = viewer.render(Path("mesh.glb"), azimuth=35, elevation=25, size=256)
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WEB = Path(__file__).resolve().parents[1]
ENTRY = WEB / "tools" / "stock_viewer.js"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic",
]


def chromium_path() -> str | None:
    """The chromium binary: ``SJC_CHROMIUM``, else ``chromium`` (Debian's) or ``chromium-browser`` on the PATH."""
    return os.environ.get("SJC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def bundle(modules: Path = WEB / "node_modules") -> str:
    """The viewer as one IIFE script (esbuild from ``modules``)."""
    esbuild = modules / ".bin" / "esbuild"
    if not esbuild.exists():
        raise FileNotFoundError(f"esbuild not found at {esbuild}: run `npm ci` in {WEB}")
    out = subprocess.run(
        [str(esbuild), str(ENTRY), "--bundle", "--format=iife", "--log-level=warning"],
        cwd=WEB, check=True, capture_output=True, text=True,
    )
    return out.stdout


class StockViewer:
    """One page with the stock viewer loaded; :meth:`render` draws a GLB and returns a PNG of the canvas."""

    def __init__(self, browser: Any, script: str | None = None) -> None:
        self.page = browser.new_page(viewport={"width": 512, "height": 512})
        self.page.set_content("<!doctype html><html><body style='margin:0'></body></html>")
        self.page.add_script_tag(content=script or bundle())
        self.page.wait_for_function("window.stockViewerReady === true")

    def render(
        self, glb: Path | bytes, azimuth: float = 35.0, elevation: float = 25.0, size: int = 256,
        background: str = "#ffffff",
    ) -> tuple[bytes, dict[str, Any]]:
        """PNG bytes of the canvas and ``{"materials": [...], "triangles": n}`` as three.js built them."""
        data = glb if isinstance(glb, bytes) else Path(glb).read_bytes()
        info = self.page.evaluate(
            "([b64, opts]) => window.renderGLB(b64, opts)",
            [base64.b64encode(data).decode("ascii"),
             {"azimuth": azimuth, "elevation": elevation, "size": size, "background": background}],
        )
        return self.page.locator("#view").screenshot(), info

    def close(self) -> None:
        self.page.close()

    @classmethod
    @contextlib.contextmanager
    def launch(cls) -> Iterator["StockViewer"]:
        """A viewer in a fresh headless Chromium (``SJC_CHROMIUM`` or ``chromium`` on the PATH)."""
        from playwright.sync_api import sync_playwright

        exe = chromium_path()
        if exe is None:
            raise FileNotFoundError("no chromium binary (apt-get install chromium, or set SJC_CHROMIUM)")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
            try:
                viewer = cls(browser)
                yield viewer
                viewer.close()
            finally:
                browser.close()
