"""The review screen in Chromium at 1024x768 and 1440x900: layout, keys in text fields, zoom, overlay, help.

Starts the app over a catalogue of wide images (1200 x 400) with 15 px bright
blobs, drives Debian's chromium through Playwright, checks bounding boxes
and the store, and writes screenshots of each view (into
``$RAREMINE_SCREENSHOTS`` when set, e.g. ``docs/``).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from mining.catalogue.store import Store
from tests import review_browser as rb
from tests.review_catalogue import build_catalogue

pytestmark = [pytest.mark.timeout(240)]

_REASON = rb.skip_reason()
if _REASON:
    pytestmark.append(pytest.mark.skip(reason=_REASON))

SIZES = [(1024, 768), (1440, 900)]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return build_catalogue(tmp_path_factory.mktemp("screen"), n=12, size=400, width=1200)


@pytest.fixture
def shots(tmp_path):
    out = os.environ.get("RAREMINE_SCREENSHOTS") or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    return out


def _votes(db, reviewer):
    with Store(db, readonly=True) as s:
        return [
            tuple(r)
            for r in s.query("SELECT image_id, verdict, note FROM reviews WHERE reviewer = ? ORDER BY id", (reviewer,))
        ]


def _go(page, view):
    page.get_by_test_id("stSidebar").get_by_text(view, exact=True).click()
    rb.wait_idle(page)
    page.wait_for_timeout(600)


def _check_layout(page, what, settle_s: float = 10.0):
    """No image over a control once the page has settled (images still loading on a busy machine
    move the controls below them: the boxes are read again until they stop moving, up to ``settle_s``)."""
    before = None
    for _ in range(int(settle_s / 0.5)):
        images = rb.boxes(page, rb.IMAGE_SELECTORS)
        controls = rb.boxes(page, rb.CONTROL_SELECTORS)
        now = [(b["x"], b["y"], b["width"], b["height"]) for b in images + controls]
        if now == before:
            break
        before = now
        page.wait_for_timeout(500)
    assert images and controls, what
    bad = [(i["what"], c["what"], c["text"]) for i in images for c in controls if rb.overlaps(i, c)]
    assert not bad, f"{what}: images over controls: {bad}"


def _screenshot_ok(path, box=None):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 300, path
    if box:  # the picture was drawn there (not a blank or a broken image)
        x, y, w, h = (round(box[k]) for k in ("x", "y", "width", "height"))
        crop = img[y : y + h, x : x + w]
        assert crop.size and float(crop.std()) > 3.0, (path, float(crop.std()))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layout_holds_no_image_over_a_control(catalogue, app_url, chromium, shots, size):
    w, h = size
    page = rb.open_queue(chromium, app_url, f"layout{w}", width=w, height=h)
    # verdict buttons fully visible: in the window, their text not cut
    verdicts = page.locator('[class*="st-key-verdict_bar"] button')
    assert verdicts.count() == 6
    for i in range(verdicts.count()):
        b = verdicts.nth(i).bounding_box()
        assert b["x"] >= 0 and b["x"] + b["width"] <= w and b["y"] + b["height"] <= h, verdicts.nth(i).inner_text()
    assert rb.truncated(page, '[class*="st-key-verdict_bar"] button') == []
    _check_layout(page, f"queue {w}x{h}")
    # top to bottom: the header, the round's progress, the verdict buttons, the image
    order = [
        page.locator("p", has_text="· item ").first.bounding_box()["y"],
        page.locator('[data-testid="stProgress"]').first.bounding_box()["y"],
        verdicts.first.bounding_box()["y"],
        page.locator(".rm-pane").first.bounding_box()["y"],
    ]
    assert order == sorted(order), order
    pane = page.locator(".rm-pane").first.bounding_box()
    path = os.path.join(shots, f"review_queue_{w}x{h}.png")
    page.screenshot(path=path)
    _screenshot_ok(path, pane)
    # hot spot and side by side: still nothing over a control
    page.keyboard.press("h")
    page.keyboard.press("s")
    page.wait_for_timeout(300)
    assert rb.viewer_state(page)["side"] == "on" and rb.viewer_state(page)["hot"] == "on"
    _check_layout(page, f"queue, side by side and hot spot, {w}x{h}")
    path = os.path.join(shots, f"review_inspect_{w}x{h}.png")
    page.screenshot(path=path)
    _screenshot_ok(path, page.locator(".rm-crop img").first.bounding_box())
    page.keyboard.press("s")
    page.keyboard.press("h")
    _go(page, "Grid")
    page.locator('[data-testid="stImage"]').first.wait_for(timeout=20_000)
    _check_layout(page, f"grid {w}x{h}")
    # every verdict of every thumbnail can be reached ("unsure" included)
    assert rb.truncated(page, '[data-testid="stButtonGroup"] button') == []
    path = os.path.join(shots, f"review_grid_{w}x{h}.png")
    page.screenshot(path=path, full_page=True)
    _screenshot_ok(path, page.locator('[data-testid="stImage"] img').first.bounding_box())
    for view in ("Progress", "Disagreements", "Export", "Map"):
        _go(page, view)
        page.screenshot(path=os.path.join(shots, f"review_{view.lower()}_{w}x{h}.png"))
    page.context.close()


def test_keys_in_text_fields_cast_no_vote(catalogue, app_url, chromium):
    db = catalogue["db"]
    # the name typed once, then Enter, then Y: the name stays "kim" and Y votes as kim
    page = chromium.new_context(viewport={"width": 1024, "height": 768}).new_page()
    page.goto(app_url)
    rb.wait_idle(page)
    field = page.locator("input[aria-label=Reviewer]")
    field.click()
    page.keyboard.type("kim")
    page.keyboard.press("Enter")
    page.locator("p", has_text="· item ").first.wait_for(timeout=20_000)
    rb.wait_idle(page)
    page.wait_for_timeout(800)
    assert "reviewer kim ·" in rb.header(page)
    assert page.locator("input[aria-label=Reviewer]").count() == 0  # set once: no field left to type a Y into
    rb.press_and_wait(page, "y")
    with Store(db, readonly=True) as s:
        names = {r[0] for r in s.query("SELECT DISTINCT reviewer FROM reviews WHERE reviewer LIKE 'kim%'")}
    assert names == {"kim"} and len(_votes(db, "kim")) == 1
    # a note: Y N U typed into it go into the note, not into the catalogue
    note = page.locator("input[aria-label=Note]")
    note.click()
    page.keyboard.type("yun")
    page.wait_for_timeout(300)
    assert note.input_value() == "yun" and len(_votes(db, "kim")) == 1
    page.keyboard.press("Enter")  # keeps the note and leaves the field: the next key votes
    rb.wait_rerun(page)
    page.wait_for_timeout(300)
    rb.press_and_wait(page, "n")
    got = _votes(db, "kim")
    assert len(got) == 2 and got[-1][1:] == ("reject", "yun")
    # the help lists every shortcut
    page.keyboard.press("?")
    helpbox = page.locator(".rm-help")
    helpbox.wait_for(state="visible", timeout=5_000)
    text = helpbox.inner_text()
    for key in ("Y", "N", "U", "1-9", "J / K", "Z", "+ / - / 0", "arrows", "H", "O", "S", "?"):
        assert key in text, key
    page.keyboard.press("Escape")
    helpbox.wait_for(state="hidden", timeout=5_000)
    assert len(_votes(db, "kim")) == 2
    page.context.close()


def test_zoom_reaches_8x_on_a_small_defect_and_the_overlay_toggles(catalogue, app_url, chromium):
    with Store(catalogue["db"]) as s, s.transaction() as con:  # earlier tests' claims lapse
        con.execute("DELETE FROM meta WHERE key LIKE 'review.claim.%'")
    page = rb.open_queue(chromium, app_url, "zoe", width=1024, height=768)
    blobs = {os.path.basename(p): xy for p, xy in catalogue["blobs"].items()}
    for _ in range(12):  # J to the next image with a blob (others may have decided the first ones)
        name = rb.header(page).rsplit("· ", 1)[-1].strip()
        if name in blobs:
            break
        rb.press_and_wait(page, "j")
    blob = blobs[name]
    page.wait_for_timeout(500)
    st0 = rb.viewer_state(page)
    assert st0["zoom"] == 1.0 and st0["overlay"] == "on"
    fit = st0["scale"]
    assert 15 * fit < 6  # the 15 px blob is a few screen pixels when the whole 1200 px image is shown
    page.keyboard.press("h")  # jump to the hot spot
    for _ in range(12):
        if rb.viewer_state(page)["zoom"] >= 8:
            break
        page.keyboard.press("+")
    st = rb.viewer_state(page)
    assert st["zoom"] >= 8 and st["scale"] >= 8 * fit - 1e-3  # the crop below keeps the image's size
    # the defect is on screen, centred, and at least 8 times as large as at fit
    stage = page.locator(".rm-pane .rm-stage").first.bounding_box()
    pane = page.locator(".rm-pane").first.bounding_box()
    bx, by = stage["x"] + blob[0] * st["scale"], stage["y"] + blob[1] * st["scale"]
    assert pane["x"] < bx < pane["x"] + pane["width"] and pane["y"] < by < pane["y"] + pane["height"]
    assert 15 * st["scale"] >= 8 * 15 * fit
    # the hot spot's full-resolution crop shows the blob
    crop = page.locator(".rm-crop img").first
    assert crop.is_visible()
    # arrows pan, 0 fits again, the wheel zooms
    page.keyboard.press("ArrowRight")
    moved = page.locator(".rm-pane .rm-stage").first.bounding_box()
    assert moved["x"] < stage["x"] - 1
    page.keyboard.press("0")
    assert rb.viewer_state(page)["zoom"] == 1.0
    page.mouse.move(pane["x"] + pane["width"] / 2, pane["y"] + pane["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(200)
    assert rb.viewer_state(page)["zoom"] > 1.5
    # O toggles the outline of the hot region
    outline = page.locator(".rm-outline").first
    assert outline.is_visible()
    page.keyboard.press("o")
    assert rb.viewer_state(page)["overlay"] == "off" and not outline.is_visible()
    page.keyboard.press("o")
    assert rb.viewer_state(page)["overlay"] == "on" and outline.is_visible()
    # the outline surrounds the blob (in image pixels)
    pts = page.locator(".rm-outline polygon").first.get_attribute("points")
    xy = np.array([[float(v) for v in p.split(",")] for p in pts.split()])
    assert xy[:, 0].min() <= blob[0] <= xy[:, 0].max() and xy[:, 1].min() <= blob[1] <= xy[:, 1].max()
    assert np.ptp(xy[:, 0]) < 60  # an outline of the blob, not of the whole image
    assert _votes(catalogue["db"], "zoe") == []  # none of these keys voted
    page.context.close()


def test_learn_and_rank_from_the_app_and_the_buttons_come_back(tmp_path, chromium):
    from mining import review as rv

    cat = build_catalogue(tmp_path, n=24, size=128)
    with Store(cat["db"]) as s:  # 16 verdicts, so that learning has something to learn from
        for it in rv.round_items(s)[:16]:
            rv.record_verdict(s, it, "qa", "confirm" if it.path in cat["blobs"] else "reject")
    busy = "() => [...document.querySelectorAll('button')].some(b => /Learn from the/.test(b.innerText) && b.disabled)"
    usable = """() => [...document.querySelectorAll('button')].filter(b => /Rank the next round|Learn from the/.test(
        b.innerText)).every(b => !b.disabled)"""
    with rb.run_app(cat["db"]) as url:
        page = rb.open_queue(chromium, url, "rex", width=1440, height=900)
        _go(page, "Progress")
        page.get_by_role("button", name="Learn from the verdicts").click()
        page.wait_for_function(busy, timeout=30_000)  # drawn disabled while the job runs (seconds)
        # the job's end redraws the page: both buttons usable again, without a click or a reload
        page.wait_for_function(usable, timeout=120_000)
        assert "learn finished in" in page.get_by_text("learn finished in").inner_text()
        page.get_by_role("button", name="Rank the next round").click()
        done = page.get_by_text("rank finished in")
        done.wait_for(timeout=60_000)
        page.wait_for_function(usable, timeout=15_000)
        # the first step (rank.step 6) of the 8 images nobody reviewed yet; the rest follow the verdicts
        assert "round 2: 6 candidates, the first step of 24" in done.inner_text()
        with Store(cat["db"], readonly=True) as s:
            assert s.query("SELECT COUNT(*) FROM candidates WHERE round = 2")[0][0] == 6
        _go(page, "Queue")
        assert "round 2 · item 1 of 6" in rb.header(page)
        page.context.close()
