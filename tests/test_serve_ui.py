"""The web UI's fit and finish (issue 25), end to end in headless Chromium against a real uvicorn server: the video
overlay of the frame actually shown, one video job at a time, a chart readable on a phone, photo layout, the words
of errors, names and keyboard use. Viewports are emulated through the DevTools protocol (1366x768, 390x844)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import PHOTOS, VIDEO, YUNET
from test_serve_browser import _open_ui, base_url, browser, httpx, serving, uvicorn, webm_clip  # noqa: F401 (fixtures)

pytest.importorskip("selenium.webdriver", reason="browser tests need selenium (pip install selenium)")  # before its parts

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

BLOCK = 10  # the shown picture and the clip's frames are compared as means of 10x10 pixel blocks


@pytest.fixture()
def viewport(browser):  # noqa: F811
    """Set the page's viewport: ``viewport(w, h, dpr=1, mobile=False)``; the browser's own comes back afterwards."""

    def set_viewport(width: int, height: int, dpr: float = 1, mobile: bool = False) -> None:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": height, "deviceScaleFactor": dpr, "mobile": mobile})

    yield set_viewport
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.fixture(scope="module")
def clip_frames():
    """Every frame of the real clip as PyAV decodes it: (presentation times in s, 10x10 block means, RGB)."""
    av = pytest.importorskip("av")
    times, thumbs = [], []
    with av.open(str(VIDEO)) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24").astype(np.float32)
            h, w = rgb.shape[:2]
            thumbs.append(rgb.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3).mean(axis=(1, 3)))
            times.append(float(f.time))
    return np.array(times), np.stack(thumbs)


def _video_tab(browser, base_url: str) -> None:  # noqa: F811
    _open_ui(browser, base_url)
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="video"]').click()


def _upload_video(browser, path, detect_every: int = 1) -> None:  # noqa: F811
    box = browser.find_element(By.ID, "detect-every")
    box.clear()
    box.send_keys(str(detect_every))
    browser.find_element(By.ID, "video-input").send_keys(str(path))


def _wait_state(browser, states: tuple[str, ...], timeout: float = 120) -> str:  # noqa: F811
    status = browser.find_element(By.ID, "video-status")
    WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda d: status.get_attribute("data-state") in states)
    return status.get_attribute("data-state")


def _wait_playable(browser) -> None:  # noqa: F811
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return document.getElementById('video-player').readyState >= 2 "
        "&& document.getElementById('video-overlay').dataset.frame !== ''"))


def _count_seeks(browser) -> None:  # noqa: F811
    browser.execute_script("""const v = document.getElementById('video-player'); window.seeks = 0;
        v.addEventListener('seeked', () => { window.seeks += 1; });""")


def _after_seek(browser, before: int) -> None:  # noqa: F811
    """Wait for the player's next completed seek, and then for its frame to be presented and drawn over."""
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return window.seeks") > before)
    time.sleep(0.4)


def _seek(browser, t: float) -> None:  # noqa: F811
    before = browser.execute_script("return window.seeks")
    browser.execute_script("document.getElementById('video-player').currentTime = arguments[0]", t)
    _after_seek(browser, before)


def _shown_frame(browser, clip_frames) -> int:  # noqa: F811
    """The clip's frame that the player shows now, found by its pixels (the closest of all the clip's frames)."""
    means = browser.execute_script("""
        const v = document.getElementById('video-player'), B = arguments[0];
        const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data, out = [];
        for (let by = 0; by < c.height / B; by++) for (let bx = 0; bx < c.width / B; bx++) {
            const s = [0, 0, 0];
            for (let y = by * B; y < by * B + B; y++) for (let x = bx * B; x < bx * B + B; x++)
                for (let k = 0; k < 3; k++) s[k] += d[4 * (y * c.width + x) + k];
            out.push(s[0] / (B * B), s[1] / (B * B), s[2] / (B * B));
        }
        return out;""", BLOCK)
    _, thumbs = clip_frames
    shown = np.array(means, np.float32).reshape(thumbs.shape[1:])
    err = np.abs(thumbs - shown).mean(axis=(1, 2, 3))
    best = int(np.argmin(err))
    assert err[best] < 6, f"the picture matches no frame of the clip (closest: frame {best}, error {err[best]:.1f})"
    return best


def _check_overlay_is_of_frame(browser, frame: int, clip_frames) -> None:  # noqa: F811
    """The overlay draws the results of `frame`: its tags, a box edge at each of its faces, the chart's cursor at its time."""
    overlay = browser.find_element(By.ID, "video-overlay")
    expected = browser.execute_script(
        "const r = state.video.results[arguments[0]]; return [r.frame, r.faces.map((f, i) => faceTag(f, i)).join('|'),"
        " r.faces.map(f => f.box)]", frame)
    assert expected[0] == frame
    assert overlay.get_attribute("data-tags") == expected[1], f"the tags drawn are not those of frame {frame}"
    for x, y, w, h in expected[2]:  # the left edge of each box of this frame is drawn
        alpha = browser.execute_script(
            "return document.getElementById('video-overlay').getContext('2d').getImageData(arguments[0], arguments[1], 1, 1)"
            ".data[3]", x, y + h // 2)
        assert alpha > 0, (frame, (x, y, w, h))
    assert overlay.get_attribute("data-frame") == str(frame)
    times, _ = clip_frames
    now = float(browser.find_element(By.ID, "timeline").get_attribute("aria-valuenow"))
    assert abs(now - times[frame]) < 0.002  # the cursor stands at the frame's own time on the player's clock


# ------------------------------------------------------------------ 9: the overlay of the frame shown


def test_the_video_overlay_and_the_cursor_are_those_of_the_frame_shown(browser, base_url, viewport, clip_frames):  # noqa: F811
    """The real clip's video starts at 0.852 s (its first timestamp) and its results at 0 s: at 3.0 s the player
    shows frame 64 (the crowd), and the overlay must be frame 64's, not frame 89's (the next shot)."""
    viewport(1366, 768)
    _video_tab(browser, base_url)
    _upload_video(browser, VIDEO)
    assert _wait_state(browser, ("done", "failed")) == "done"
    _wait_playable(browser)
    _count_seeks(browser)
    times, _ = clip_frames
    assert abs(times[0] - 0.852) < 0.001
    for t in (3.0, 6.0, 1.5):
        _seek(browser, t)
        shown = _shown_frame(browser, clip_frames)
        assert abs(shown - (np.searchsorted(times, t, side="right") - 1)) <= 1  # the frame on screen at t
        _check_overlay_is_of_frame(browser, shown, clip_frames)
    # A click on the chart seeks there: the picture, the overlay and the cursor agree.
    timeline = browser.find_element(By.ID, "timeline")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", timeline)
    before = browser.execute_script("return window.seeks")
    # At a fifth of its width (offsets count from its centre): about a fifth into the clip.
    ActionChains(browser).move_to_element_with_offset(timeline, -int(timeline.rect["width"] * 0.3), 0).click().perform()
    _after_seek(browser, before)
    shown = _shown_frame(browser, clip_frames)
    _check_overlay_is_of_frame(browser, shown, clip_frames)
    assert 20 < shown < 120


# ------------------------------------------------------------------ 14: the chart is reached and moved with keys


def test_the_timeline_seeks_with_the_keyboard(browser, base_url, viewport, clip_frames):  # noqa: F811
    viewport(1366, 768)
    _video_tab(browser, base_url)
    _upload_video(browser, VIDEO, detect_every=3)
    assert _wait_state(browser, ("done", "failed")) == "done"
    _wait_playable(browser)
    _count_seeks(browser)
    timeline = browser.find_element(By.ID, "timeline")
    assert timeline.get_attribute("role") == "slider" and timeline.get_attribute("tabindex") == "0"
    # Reached with Tab, like the other controls.
    browser.execute_script("document.querySelector('#video-result .downloads button').focus()")  # past the chart ...
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()  # ... and back
    assert browser.execute_script("return document.activeElement.id") == "timeline"
    last = len(clip_frames[0]) - 1
    for keys, expect in (([Keys.END], lambda f: f == last), ([Keys.HOME], lambda f: f == 0),
                         ([Keys.ARROW_RIGHT], lambda f: 28 <= f <= 32),  # 1 s at 29.97 frames/s
                         ([Keys.SHIFT, Keys.ARROW_RIGHT], None)):
        before_frame = int(browser.find_element(By.ID, "video-overlay").get_attribute("data-frame"))
        before = browser.execute_script("return window.seeks")
        if keys[0] == Keys.SHIFT:
            ActionChains(browser).key_down(Keys.SHIFT).send_keys(keys[1]).key_up(Keys.SHIFT).perform()
        else:
            ActionChains(browser).send_keys(keys[0]).perform()
        _after_seek(browser, before)
        shown = _shown_frame(browser, clip_frames)
        _check_overlay_is_of_frame(browser, shown, clip_frames)
        assert expect(shown) if expect else shown == before_frame + 1, (keys, shown)
        assert browser.execute_script("return document.activeElement.id") == "timeline"  # the page did not scroll away


# ------------------------------------------------------------------ 10: one video job at a time


def _record_status(browser) -> None:  # noqa: F811
    browser.execute_script("""window.statusLog = [];
        const s = document.getElementById('video-status');
        new MutationObserver(() => window.statusLog.push([s.dataset.job, s.dataset.state, s.textContent]))
            .observe(s, {attributes: true, childList: true, characterData: true, subtree: true});""")


def _job_started(browser):  # noqa: F811
    """The video status element and its job id, once the uploaded video's job is queued or running."""
    status = browser.find_element(By.ID, "video-status")
    WebDriverWait(browser, 60, poll_frequency=0.05).until(
        lambda d: status.get_attribute("data-state") in ("queued", "running") and status.get_attribute("data-job"))
    return status, status.get_attribute("data-job")


def test_a_second_video_upload_replaces_the_first_job(browser, base_url, webm_clip):  # noqa: F811
    _video_tab(browser, base_url)
    _upload_video(browser, VIDEO)
    status, first = _job_started(browser)
    assert browser.find_element(By.ID, "video-cancel").is_displayed()
    _record_status(browser)
    _upload_video(browser, webm_clip)
    assert _wait_state(browser, ("done", "failed")) == "done"
    second = status.get_attribute("data-job")
    assert second and second != first
    _wait_playable(browser)
    time.sleep(1.5)  # the first job's polling would have spoken by now
    log = browser.execute_script("return window.statusLog")
    assert log and all(job in ("", second) for job, _, _ in log), log  # never the first job's status again
    assert all("clip.webm" in text for _, _, text in log if text), log
    assert status.get_attribute("data-state") == "done" and status.get_attribute("data-job") == second
    assert browser.execute_script("return [state.video.id, state.video.results.length]") == [second, 30]
    # The first job was cancelled on the server: gone, and the worker is free.
    assert httpx.get(f"{base_url}v1/videos/{first}", timeout=10).status_code == 404
    assert httpx.get(f"{base_url}health", timeout=10).json()["video_jobs"].get("running", 0) == 0
    assert not browser.find_element(By.ID, "video-cancel").is_displayed()


def test_cancel_stops_the_video_job(browser, base_url):  # noqa: F811
    _video_tab(browser, base_url)
    _upload_video(browser, VIDEO)
    status, job = _job_started(browser)
    cancel = browser.find_element(By.ID, "video-cancel")
    assert cancel.is_displayed() and cancel.text == "Cancel"
    cancel.click()
    WebDriverWait(browser, 5).until(lambda d: status.get_attribute("data-state") == "cancelled")
    assert "Cancelled short_hamilton_clip.mp4" in status.text
    assert not cancel.is_displayed() and not browser.find_element(By.ID, "video-progress").is_displayed()
    assert browser.execute_script("return document.activeElement.id") == "video-input"  # the focus is not lost
    assert httpx.get(f"{base_url}v1/videos/{job}", timeout=10).status_code == 404
    _record_status(browser)
    time.sleep(1.5)
    assert browser.execute_script("return window.statusLog") == []  # nothing more is said about the cancelled job
    assert not browser.find_element(By.ID, "video-result").is_displayed()
    t0 = time.time()
    while httpx.get(f"{base_url}health", timeout=10).json()["video_jobs"].get("running", 0):
        assert time.time() - t0 < 10, "the cancelled job still runs"
        time.sleep(0.2)


# ------------------------------------------------------------------ 11: the chart on a phone


def test_the_timeline_is_drawn_at_its_size_and_readable_on_a_phone(browser, base_url, viewport, webm_clip):  # noqa: F811
    viewport(390, 844, dpr=3, mobile=True)
    _video_tab(browser, base_url)
    _upload_video(browser, webm_clip)
    assert _wait_state(browser, ("done", "failed")) == "done"
    timeline = browser.find_element(By.ID, "timeline")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", timeline)
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("""const c = arguments[0];
        return c.width === Math.round(c.clientWidth * devicePixelRatio) && c.height === Math.round(c.clientHeight * devicePixelRatio)""",
                                                               timeline))
    css_w, css_h, bitmap_w, dpr = browser.execute_script(
        "const c = arguments[0]; return [c.clientWidth, c.clientHeight, c.width, devicePixelRatio]", timeline)
    assert dpr == 3 and 300 < css_w <= 390 and css_h >= 140 and bitmap_w == round(css_w * 3)
    # The tick labels of the probability axis (left of the plot) stand as tall on screen as 12 px text does.
    heights = browser.execute_script("""
        const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, Math.floor(c.width * 0.04), c.height);
        const rows = []; for (let y = 0; y < d.height; y++) { let ink = false;
            for (let x = 0; x < d.width; x++) if (d.data[4 * (y * d.width + x) + 3] > 128) { ink = true; break; }
            rows.push(ink); }
        const runs = []; let n = 0; for (const r of rows.concat([false])) { if (r) n++; else if (n) { runs.push(n); n = 0; } }
        return runs.map(h => h * c.clientWidth / c.width);""", timeline)
    assert len(heights) >= 5 and min(heights) >= 7, heights  # five labels, digits >= 7 CSS px tall (12 px text)
    legend = browser.find_elements(By.CSS_SELECTOR, "#timeline-legend > span")
    assert [e.text for e in legend] == browser.execute_script("return state.video.labels")
    assert all(float(e.value_of_css_property("font-size")[:-2]) >= 12 and e.is_displayed() for e in legend)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    # Turned to a laptop's window: redrawn at the new size.
    viewport(1366, 768, dpr=1)
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "const c = arguments[0]; return c.clientWidth > 600 && c.width === c.clientWidth", timeline))


# ------------------------------------------------------------------ 12: photo layout


def test_face_tags_do_not_cover_each_other_in_a_crowd(browser, base_url, viewport):  # noqa: F811
    viewport(1366, 768)
    _open_ui(browser, base_url)
    browser.find_element(By.ID, "photo-input").send_keys(str(PHOTOS / "test_image.jpg"))  # six faces side by side
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "photo-result").get_attribute("data-count"))
    canvas = browser.find_element(By.ID, "photo-canvas")
    tags = canvas.get_attribute("data-tags").split("|")
    rects = [tuple(r) for r in json.loads(canvas.get_attribute("data-tag-boxes"))]
    boxes = browser.execute_script("return state.photo.faces.map(f => f.box)")
    assert len(tags) == len(rects) == len(boxes) == 6
    for i, a in enumerate(rects):
        for j, b in enumerate(rects[:i]):
            overlap = a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
            assert not overlap, f"tag {tags[i]!r} covers tag {tags[j]!r}: {a} {b}"
        x, y, w, h = boxes[i]
        tx, ty, tw, th = a
        assert 0 <= tx and tx + tw <= 2048 and 0 <= ty and ty + th <= 1536  # in the picture
        assert tx < x + w and x < tx + tw  # above or below its own face
        assert ty + th >= y - 3 * th and ty <= y + h + 3 * th, (tags[i], a, boxes[i])  # near it
    # The tag's pixels are there: its colour fills it (the tag of a face is drawn on top, not covered by another).
    for (tx, ty, tw, th), face in zip(rects, browser.execute_script("return state.photo.faces.map(f => f.label)")):
        colour = browser.execute_script("return colour(arguments[0])", face)
        rgb = browser.execute_script(
            "const d = document.getElementById('photo-canvas').getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data;"
            "return [d[0], d[1], d[2]]", tx + 1, ty + th - 2)
        assert "#{:02x}{:02x}{:02x}".format(*rgb) == colour


def test_a_portrait_photo_fits_the_window(browser, base_url, viewport):  # noqa: F811
    viewport(1366, 768)
    _open_ui(browser, base_url)
    browser.find_element(By.ID, "photo-input").send_keys(str(PHOTOS / "kit_with_rose.jpg"))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "photo-result").get_attribute("data-count"))
    canvas = browser.find_element(By.ID, "photo-canvas")
    w, h = int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))
    assert h > w  # portrait
    inner = browser.execute_script("return innerHeight")
    assert inner == 768
    rect = canvas.rect
    assert rect["height"] <= inner - 20, rect  # the whole photo fits the window
    assert abs(rect["width"] / rect["height"] - w / h) < 0.01  # not squashed
    assert rect["height"] > 0.8 * inner  # and not needlessly small
    # A landscape photo still takes the stage's width.
    browser.find_element(By.ID, "photo-input").send_keys(str(PHOTOS / "two_people.jpg"))
    WebDriverWait(browser, 60).until(lambda d: canvas.get_attribute("width") == "1126")
    stage = browser.find_element(By.CSS_SELECTOR, "#photo-result .stage").rect
    assert abs(canvas.rect["width"] - stage["width"]) <= 1 and canvas.rect["height"] <= inner


def test_a_refused_photo_clears_the_previous_answer_and_a_video_is_sent_to_the_video_tab(browser, base_url):  # noqa: F811
    _open_ui(browser, base_url)
    browser.find_element(By.ID, "photo-input").send_keys(str(PHOTOS / "two_people.jpg"))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "photo-result").get_attribute("data-count") == "2")
    browser.find_element(By.ID, "photo-input").send_keys(str(VIDEO))  # a video in the Photo tab: refused (415)
    message = browser.find_element(By.ID, "message")
    WebDriverWait(browser, 30).until(lambda d: "short_hamilton_clip.mp4:" in message.text)
    assert "not an image" in message.text and "Video tab" in message.text
    assert "error" in message.get_attribute("class")
    assert not browser.find_element(By.ID, "photo-result").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#photo-faces .face-card") == []
    assert browser.execute_script("return state.photo") is None
    assert browser.find_element(By.ID, "photo-canvas").get_attribute("data-tags") == ""


# ------------------------------------------------------------------ 13: words


@pytest.fixture(scope="module")
def key_url():
    """A server with an API key (ferkit serve --api-key)."""
    from ferkit.app.serve import create_app
    from ferkit.infer.recognizer import RecognizerSettings

    app = create_app(model="default", recognizer=RecognizerSettings(detector="yunet", yunet_path=YUNET, device="cpu"),
                     api_key="right-key")
    with serving(app) as url:
        yield url


def test_a_wrong_api_key_says_to_check_the_key_box_and_the_menus_fill_once_it_is_right(browser, key_url):  # noqa: F811
    browser.get(key_url)
    browser.execute_script("localStorage.removeItem('ferkit-api-key')")
    browser.get(key_url)
    try:
        message = browser.find_element(By.ID, "message")
        WebDriverWait(browser, 20).until(lambda d: "API key" in message.text)
        assert "API key box" in message.text and "header" not in message.text
        box = browser.find_element(By.ID, "api-key")
        assert box.is_displayed() and browser.find_elements(By.CSS_SELECTOR, "#model-select option") == []
        box.send_keys("wrong-key", Keys.ENTER)
        WebDriverWait(browser, 20).until(lambda d: "wrong API key" in message.text)
        assert "check the API key box" in message.text
        # The live camera with that key: the same words, not the WebSocket protocol's.
        browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="live"]').click()
        browser.execute_script("document.getElementById('message').textContent = ''")
        browser.find_element(By.ID, "live-start").click()
        WebDriverWait(browser, 30).until(lambda d: "API key" in message.text)
        assert "check the API key box" in message.text and "subprotocol" not in message.text
        assert "header" not in message.text
        # The right key: the menus fill, the message goes; no reload.
        browser.execute_script("window.notReloaded = true")
        box.clear()
        box.send_keys("right-key", Keys.ENTER)
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
        assert browser.find_elements(By.CSS_SELECTOR, "#detector-select option")
        assert not message.is_displayed()
        assert browser.execute_script("return window.notReloaded") is True
    finally:
        browser.execute_script("localStorage.removeItem('ferkit-api-key')")


def test_a_video_sent_to_predict_is_refused_with_415_naming_the_videos_endpoint(base_url, webm_clip):  # noqa: F811
    for path, kind in ((VIDEO, "an MP4/MOV"), (webm_clip, "a Matroska/WebM")):
        files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
        r = httpx.post(f"{base_url}v1/predict", files=files, timeout=60)
        assert r.status_code == 415, r.text
        assert r.json()["error"] == (f"the upload is {kind} video, not an image: expected one image (JPEG, PNG, BMP, TIFF, "
                                     "WebP); recognise videos with POST /v1/videos (the Video tab)")
    files = {"file": ("two_people.jpg", (PHOTOS / "two_people.jpg").read_bytes(), "image/jpeg")}
    assert httpx.post(f"{base_url}v1/predict", files=files, timeout=60).status_code == 200  # photos still pass


# ------------------------------------------------------------------ 14: names and keyboard


def test_photo_downloads_are_named_after_the_photo(browser, base_url):  # noqa: F811
    _open_ui(browser, base_url)
    browser.find_element(By.ID, "photo-input").send_keys(str(PHOTOS / "two_people.jpg"))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "photo-result").get_attribute("data-count") == "2")
    # Each download is a click on a link with a file name: record it (and its content) instead of saving it.
    browser.execute_script("""window.saved = [];
        document.addEventListener('click', e => { const a = e.target;
            if (a.tagName === 'A' && a.download) { e.preventDefault();
                fetch(a.href).then(r => r.text()).then(t => window.saved.push([a.download, t])); } }, true);""")
    browser.find_element(By.ID, "photo-csv").click()
    browser.find_element(By.ID, "photo-json").click()
    WebDriverWait(browser, 10).until(lambda d: len(d.execute_script("return window.saved")) == 2)
    saved = dict(browser.execute_script("return window.saved"))
    assert set(saved) == {"two_people-faces.csv", "two_people-faces.json"}
    assert len(saved["two_people-faces.csv"].strip().splitlines()) == 3  # a header and two faces
    assert '"file": "two_people.jpg"' in saved["two_people-faces.json"]


def test_tabs_have_aria_state_and_move_with_the_arrow_keys(browser, base_url):  # noqa: F811
    _open_ui(browser, base_url)
    tabs = browser.find_elements(By.CSS_SELECTOR, '[role="tab"]')

    def selected() -> list[str]:
        return [t.get_attribute("aria-selected") for t in tabs]

    assert [t.get_attribute("aria-controls") for t in tabs] == ["tab-photo", "tab-video", "tab-live"]
    assert selected() == ["true", "false", "false"]
    for t in tabs:
        panel = browser.find_element(By.ID, t.get_attribute("aria-controls"))
        assert panel.get_attribute("aria-labelledby") == t.get_attribute("id")
    tabs[0].click()

    def active() -> str:
        return browser.execute_script("return document.activeElement.dataset.tab || document.activeElement.id")

    for key, tab, panel in ((Keys.ARROW_RIGHT, "video", "tab-video"), (Keys.ARROW_RIGHT, "live", "tab-live"),
                            (Keys.ARROW_RIGHT, "photo", "tab-photo"), (Keys.ARROW_LEFT, "live", "tab-live"),
                            (Keys.HOME, "photo", "tab-photo"), (Keys.END, "live", "tab-live")):
        ActionChains(browser).send_keys(key).perform()
        assert active() == tab, key
        assert selected() == [str(t.get_attribute("data-tab") == tab).lower() for t in tabs]
        assert browser.find_element(By.ID, panel).is_displayed()
    # One Tab stop for the tab list: Tab goes on to the model menu.
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert active() == "model-select"
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert active() == "live"


def test_start_and_stop_keep_the_keyboard_focus(browser, base_url):  # noqa: F811
    _open_ui(browser, base_url)
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="live"]').click()
    browser.execute_script("document.getElementById('live-start').focus()")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    WebDriverWait(browser, 60).until(
        lambda d: int(d.find_element(By.ID, "live-status").get_attribute("data-frames") or 0) >= 1)
    assert browser.execute_script("return document.activeElement.id") == "live-stop"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "live-status").get_attribute("data-state") == "stopped")
    assert browser.execute_script("return document.activeElement.id") == "live-start"
