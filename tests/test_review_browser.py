"""The review app in a real browser: Debian's chromium driven by Playwright.

Starts the app on a free loopback port over a small catalogue, reviews with
the keyboard and checks the store; two sessions vote at once and lose
nothing; screenshots of the queue, inspecting a candidate, the grid and the map are taken (into
``$RAREMINE_SCREENSHOTS`` when set, e.g. ``docs/``; a catalogue of your own
can be shown with ``$RAREMINE_SCREENSHOT_DB``).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import pytest

from mining import review as rv
from mining.catalogue.store import Store
from tests import review_browser as rb
from tests.review_catalogue import build_catalogue

pytestmark = [pytest.mark.timeout(180)]

_REASON = rb.skip_reason()
if _REASON:
    pytestmark.append(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return build_catalogue(tmp_path_factory.mktemp("browser"), n=12, size=128)


def _votes(db, reviewer):
    with Store(db, readonly=True) as s:
        return [
            tuple(r)
            for r in s.query("SELECT image_id, verdict FROM reviews WHERE reviewer = ? ORDER BY id", (reviewer,))
        ]


def test_three_candidates_reviewed_with_the_keyboard(catalogue, app_url, chromium):
    page = rb.open_queue(chromium, app_url, "kim")
    with Store(catalogue["db"], readonly=True) as s:
        queue = rv.reviewer_queue(s, rv.round_items(s), "kim")
    assert "item 1 of 12" in rb.header(page)
    for key in ("y", "n", "u"):
        rb.press_and_wait(page, key)
    assert "item 4 of 12" in rb.header(page)
    assert _votes(catalogue["db"], "kim") == [
        (queue[0].image_id, "confirm"),
        (queue[1].image_id, "reject"),
        (queue[2].image_id, "unsure"),
    ]
    rb.press_and_wait(page, "z")  # undo goes back to the third
    assert "item 3 of 12" in rb.header(page) and len(_votes(catalogue["db"], "kim")) == 2
    rb.press_and_wait(page, "j")  # next / previous without voting
    rb.press_and_wait(page, "k")
    assert "item 3 of 12" in rb.header(page) and len(_votes(catalogue["db"], "kim")) == 2
    page.context.close()


def test_painting_a_mask_saves_a_label_image_with_the_vote(catalogue, app_url, chromium):
    page = rb.open_queue(chromium, app_url, "pia")
    page.get_by_text("Paint scribbles / mask").click()
    canvas = page.locator("canvas").last
    canvas.wait_for(timeout=20_000)
    canvas.scroll_into_view_if_needed()
    rb.wait_idle(page)
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    for i in range(1, 9):
        page.mouse.move(box["x"] + 40 + 10 * i, box["y"] + 40 + 5 * i)
    page.mouse.up()
    page.wait_for_timeout(500)
    rb.wait_idle(page)
    page.get_by_role("button", name="Save label image").click()
    page.get_by_text("with your next verdict").wait_for(timeout=20_000)
    page.locator("p", has_text="· item ").first.click()
    rb.press_and_wait(page, "y")
    with Store(catalogue["db"], readonly=True) as s:
        (mask_path,) = s.query("SELECT mask_path FROM reviews WHERE reviewer = 'pia'")[0]
        annotations = [(r[0], json.loads(r[1])) for r in s.query("SELECT kind, data FROM annotations")]
    import cv2
    import numpy as np

    ((kind, data),) = annotations
    labels = cv2.imread(data["path"], cv2.IMREAD_UNCHANGED)  # what fit-pixel reads
    assert kind == "mask" and labels.shape == (128, 128) and set(np.unique(labels)) == {rv.UNLABELLED, rv.DEFECT}
    mask = cv2.imread(mask_path, cv2.IMREAD_UNCHANGED)  # what learn and the label exports read
    assert data["mask"] == mask_path and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask > 0, labels == rv.DEFECT)
    page.context.close()


def test_two_sessions_voting_at_once_lose_nothing(catalogue, app_url, chromium):
    a = rb.open_queue(chromium, app_url, "ann")
    b = rb.open_queue(chromium, app_url, "ben")
    # ann is looking at her first candidate: ben is shown another one
    assert rb.header(a).rsplit("· ", 1)[-1] != rb.header(b).rsplit("· ", 1)[-1]
    n = 3
    for _ in range(n):
        rb.wait_idle(a)
        rb.wait_idle(b)
        ha, hb = rb.header(a), rb.header(b)
        a.keyboard.press("y")
        b.keyboard.press("n")
        for page, before in ((a, ha), (b, hb)):
            page.wait_for_function(
                f"b => {{ const h = ({rb.HEADER_JS})(); return h !== null && h !== b; }}", arg=before, timeout=30_000
            )
    va, vb = _votes(catalogue["db"], "ann"), _votes(catalogue["db"], "ben")
    assert [v for _, v in va] == ["confirm"] * n and [v for _, v in vb] == ["reject"] * n
    assert len({i for i, _ in va}) == n and len({i for i, _ in vb}) == n  # one vote per image, none lost
    a.context.close()
    b.context.close()


@contextmanager
def _screenshot_app(app_url):
    db = os.environ.get("RAREMINE_SCREENSHOT_DB")
    if not db:
        yield app_url
        return
    with rb.run_app(db) as url:
        yield url


def test_screenshots_of_the_queue_grid_and_map(catalogue, app_url, chromium, tmp_path):
    out = os.environ.get("RAREMINE_SCREENSHOTS") or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    with Store(catalogue["db"]) as s, s.transaction() as con:  # the earlier tests' sessions are gone
        con.execute("DELETE FROM meta WHERE key LIKE 'review.claim.%'")
    drawn = {}
    with _screenshot_app(app_url) as url:
        page = rb.open_queue(chromium, url, "screenshot", width=1500, height=1000)
        assert rb.header(page)
        page.wait_for_timeout(400)
        drawn["review_queue.png"] = page.locator(".rm-pane").first.bounding_box()
        page.screenshot(path=os.path.join(out, "review_queue.png"))
        # inspecting: the hot spot's full-resolution crop, the map beside the image, zoomed in
        for key in ("h", "s", "+", "+"):
            page.keyboard.press(key)
        page.wait_for_timeout(400)
        drawn["review_inspect.png"] = page.locator(".rm-crop img").first.bounding_box()
        page.screenshot(path=os.path.join(out, "review_inspect.png"))
        for key in ("0", "s", "h"):
            page.keyboard.press(key)
        for view, name in (("Grid", "review_grid.png"), ("Map", "review_map.png")):
            page.get_by_test_id("stSidebar").get_by_text(view, exact=True).click()
            rb.wait_idle(page)
            if view == "Map":
                page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            else:
                page.locator('[data-testid="stImage"]').first.wait_for(timeout=20_000)
            page.wait_for_timeout(800)
            picture = ".js-plotly-plot" if view == "Map" else '[data-testid="stImage"] img'
            drawn[name] = page.locator(picture).first.bounding_box()
            page.screenshot(path=os.path.join(out, name), full_page=view == "Grid")
        # a lasso around the whole map becomes the queue
        area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
        x0, y0 = area["x"] + 5, area["y"] + 5
        x1, y1 = area["x"] + area["width"] - 5, area["y"] + area["height"] - 5
        page.mouse.move(x0, y0)
        page.mouse.down()
        for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)):
            page.mouse.move(x, y, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "() => [...document.querySelectorAll('p')].some(p => /Selected: [1-9]/.test(p.innerText))", timeout=30_000
        )
        rb.wait_idle(page)
        page.get_by_role("button", name="Review the").click()
        page.locator("p", has_text="map selection").first.wait_for(timeout=30_000)
        page.context.close()
    import cv2

    for name, box in drawn.items():  # each screenshot has its picture drawn where the page put it
        shot = cv2.imread(os.path.join(out, name), cv2.IMREAD_GRAYSCALE)
        assert shot is not None and shot.shape[1] == 1500 and shot.shape[0] >= 1000, name
        x, y, w, h = (round(box[k]) for k in ("x", "y", "width", "height"))
        assert w > 50 and h > 50, (name, box)
        assert float(shot[y : y + h, x : x + w].std()) > 3.0, f"{name}: nothing drawn at {box}"


def test_the_next_step_of_a_round_shows_by_itself(tmp_path, chromium):
    """A round chosen one at a time: the vote ends the queue, the next candidate appears without a click."""
    from mining.ranking.rank import rank

    cat = build_catalogue(tmp_path, n=8, size=128, n_candidates=1, with_map=False)
    with Store(cat["db"]) as s:
        rank(s, n=1, target=3, random_state=0)  # as the app's "Rank the next round" with rank.step 1
    config = tmp_path / "steps.yaml"
    config.write_text("rank:\n  n: 3\n  step: 1\nlearn:\n  n_folds: 3\n")  # step 1: no lookahead, it waits
    with rb.run_app(cat["db"], config=str(config)) as url:
        page = rb.open_queue(chromium, url, "sam")
        assert "round 2 · item 1 of 1" in rb.header(page)
        page.keyboard.press("n")
        # the step job learns and adds the next candidate; the page shows it by itself (no key, no click)
        page.wait_for_function("() => (document.body.innerText || '').includes('item 2 of 2')", timeout=30_000)
        assert "round 2 · item 2 of 2" in rb.header(page)
        rb.wait_idle(page)
        page.locator("p", has_text="· item ").first.click()  # keyboard focus, as after a page load
        rb.press_and_wait(page, "z")  # the undo stack survived: the vote goes, back to the first
        assert "item 1 of 2" in rb.header(page) and _votes(cat["db"], "sam") == []
        page.context.close()
