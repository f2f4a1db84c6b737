"""Driving the review app in Debian's chromium through Playwright (tests and benchmark).

Never downloads a browser: Playwright launches ``/usr/bin/chromium`` (``make
chromium`` installs it) with the flags below.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

CHROMIUM = os.environ.get("RAREMINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: The queue header: "round 1 · item 2 of 8 · ... · `name.png`".
HEADER_JS = (
    "() => { const e = [...document.querySelectorAll('p')].find(x => x.innerText.includes('· item '));"
    " return e ? e.innerText : null; }"
)


def skip_reason() -> str | None:
    """Why the browser cannot be driven here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"chromium not found at {CHROMIUM}: `make chromium` (run by `make test`) installs Debian's "
            "chromium when apt-get and root are available"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    return None


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def run_app(db: str, *, port: int | None = None, config: str | None = None, timeout: float = 60.0):
    """Start the review app with ``raremine review`` (127.0.0.1) and yield its URL; stop it afterwards."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "raremine.cli", "review", "--db", db, "--port", str(port)]
    if config:
        cmd += ["--config", config]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the app did not answer on {url} within {timeout}s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def browser():
    """A headless Debian chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_queue(b, url: str, reviewer: str, *, width: int = 1400, height: int = 950):
    """A new browser session on the queue of ``reviewer``, waited until the first candidate shows."""
    page = b.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{url}/?reviewer={reviewer}")
    wait_idle(page)
    if header(page) is not None:
        # give the document keyboard focus, as a reviewer's first click does
        page.locator("p", has_text="· item ").first.click()
        # the first second after loading, Streamlit may still re-bind the shortcuts and drop a key
        page.wait_for_timeout(1000)
        wait_idle(page)
    return page


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until the app has finished running its script (header or a message shown, no spinner)."""
    page.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return app && app.getAttribute('data-test-script-state') === 'notRunning'; }",
        timeout=timeout,
    )


def wait_rerun(page, start_timeout: float = 5_000, timeout: float = 30_000) -> None:
    """Wait for the rerun a widget change starts, then until it has finished.

    :func:`wait_idle` alone can return before the rerun has begun (on a
    loaded machine the browser sends the change late); a rerun too quick to
    be seen running costs ``start_timeout``.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
            " return app && app.getAttribute('data-test-script-state') === 'running'; }",
            timeout=start_timeout,
        )
    except PlaywrightTimeout:
        pass
    wait_idle(page, timeout)


def header(page) -> str | None:
    """The queue header's text (None when no candidate is shown)."""
    return page.evaluate(HEADER_JS)


def press_and_wait(page, key: str, timeout: float = 15_000, *, image: bool = False) -> float:
    """Press a key and wait until the next candidate's header shows; return the seconds it took.

    With ``image``, also until the viewer has drawn the next candidate's picture.
    """
    header_s, drawn_s = press_and_measure(page, key, timeout, image=image)
    return drawn_s if image and drawn_s is not None else header_s


def press_and_measure(page, key: str, timeout: float = 15_000, *, image: bool = True) -> tuple[float, float | None]:
    """Press a key; seconds until the next candidate's header shows and (``image``) until its picture is drawn.

    The picture time is None when no candidate follows (the end of the queue).
    """
    wait_idle(page)  # a key pressed while the page is still being redrawn may be dropped by the browser side
    before = header(page)
    t0 = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function(f"b => {{ const h = ({HEADER_JS})(); return h !== b; }}", arg=before, timeout=timeout)
    header_s = time.perf_counter() - t0
    drawn_s = None
    if image:
        now = header(page) or ""
        if now.count("·") >= 4:  # a candidate is shown (its file name is the header's last part)
            name = now.rsplit("· ", 1)[-1].strip().strip("`")
            page.wait_for_function(
                "n => document.documentElement.dataset.rmDrawn === n", arg=name, timeout=timeout, polling="raf"
            )
            drawn_s = time.perf_counter() - t0
    return header_s, drawn_s


#: Controls an image must never cover: buttons, text fields, sliders, choices.
CONTROL_SELECTORS = (
    '[data-testid="stButton"] button',
    '[data-testid="stTextInput"] input',
    '[data-testid="stSlider"]',
    '[data-testid="stSelectbox"]',
    '[data-testid="stCheckbox"]',
    '[data-testid="stButtonGroup"]',
    '[data-testid="stExpander"] summary',
)

#: What is shown as a picture: the viewer's panes and crop, and Streamlit's images.
IMAGE_SELECTORS = (".rm-pane", ".rm-crop img", '[data-testid="stImage"] img')


def boxes(page, selectors) -> list[dict]:
    """Bounding boxes (page coordinates) of the visible elements matching any selector (shadow roots included)."""
    out = []
    for sel in selectors:
        loc = page.locator(sel)
        for i in range(loc.count()):
            el = loc.nth(i)
            if not el.is_visible():
                continue
            b = el.bounding_box()
            if b and b["width"] > 1 and b["height"] > 1:
                out.append({**b, "what": sel, "text": (el.inner_text() if "button" in sel else "")[:40]})
    return out


def overlaps(a: dict, b: dict, margin: float = 0.5) -> bool:
    """Whether two boxes intersect by more than ``margin`` px."""
    return (
        min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"]) > margin
        and min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"]) > margin
    )


def viewer_state(page) -> dict:
    """The viewer's state (zoom relative to the whole image, screen px per image px, overlay, side, hot)."""
    v = page.locator(".rm-viewer").first
    v.wait_for(timeout=20_000)
    return {
        "zoom": float(v.get_attribute("data-zoom")),
        "scale": float(v.get_attribute("data-scale")),
        "overlay": v.get_attribute("data-overlay"),
        "side": v.get_attribute("data-side"),
        "hot": v.get_attribute("data-hot"),
    }


def truncated(page, selector: str) -> list[str]:
    """Texts of the matching elements whose text is cut (wider than the element) or that leave the window."""
    return page.evaluate(
        """sel => [...document.querySelectorAll(sel)].filter(b => {
            const r = b.getBoundingClientRect();
            const cut = [...b.querySelectorAll('p, div, span')].some(t => t.scrollWidth > t.clientWidth + 1);
            return cut || b.scrollWidth > b.clientWidth + 1 || r.left < 0 || r.right > window.innerWidth + 0.5;
        }).map(b => b.innerText)""",
        selector,
    )
