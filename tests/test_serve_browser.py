"""The web UI of ``ferkit serve`` end to end: a real uvicorn server and headless Chromium (Debian's chromium +
chromium-driver, driven by selenium), with a real photo and Chromium's fake camera playing real faces."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PHOTOS, VIDEO, YUNET

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), shutil.which("chromium"))
CHROMEDRIVER = next((p for p in ("/usr/bin/chromedriver",) if Path(p).is_file()), shutil.which("chromedriver"))
if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip("headless browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="browser tests need selenium (pip install selenium)")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

LABELS = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app):
    """``app`` served by a real uvicorn in a thread on a free port; yields its URL, stops it afterwards."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        if time.time() - t0 > 30 or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """Write BGR frames (all one even size) as an uncompressed YUV4MPEG2 4:2:0 file, Chromium's fake-camera format."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for f in frames:
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420).tobytes())  # Y plane, then U, then V
    return path


def _camera_frames(n: int = 12) -> list[np.ndarray]:
    """640x480 frames of a real photo with two faces, panning slowly so that the boxes move."""
    img = cv2.imread(str(PHOTOS / "two_people.jpg"))  # 1126x661
    h = img.shape[0]
    w = h * 4 // 3
    frames = []
    for i in range(n):
        x = int((img.shape[1] - w) * (0.3 + 0.4 * i / max(n - 1, 1)))
        frames.append(cv2.resize(img[:, x:x + w], (640, 480), interpolation=cv2.INTER_AREA))
    return frames


@pytest.fixture(scope="module")
def base_url():
    from ferkit.app.serve import create_app
    from ferkit.infer.recognizer import RecognizerSettings

    app = create_app(model="default", recognizer=RecognizerSettings(detector="yunet", yunet_path=YUNET, device="cpu"))
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    y4m = write_y4m(tmp_path_factory.mktemp("camera") / "faces.y4m", _camera_frames())
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, read with get_log("browser")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _canvas_pixel(driver, canvas_id: str, x: int, y: int) -> list[int]:
    return driver.execute_script(
        "const d = document.getElementById(arguments[0]).getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data;"
        "return [d[0], d[1], d[2]];", canvas_id, int(x), int(y))


def _resources_are_local(driver, base_url: str) -> list[str]:
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith(base_url.rstrip("/")) and not n.startswith(("data:", "blob:"))]


def test_photo_upload_shows_boxes_labels_and_probability_bars(browser, base_url, tmp_path):
    browser.get(base_url)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
    browser.find_element(By.ID, "photo-input").send_keys(str(PHOTOS / "two_people.jpg"))
    result = WebDriverWait(browser, 60).until(
        lambda d: (el := d.find_element(By.ID, "photo-result")).get_attribute("data-count") and el)
    assert result.get_attribute("data-count") == "2"
    labels = result.get_attribute("data-labels").split(",")
    assert len(labels) == 2 and set(labels) <= LABELS
    cards = browser.find_elements(By.CSS_SELECTOR, "#photo-faces .face-card")
    assert [c.get_attribute("data-label") for c in cards] == labels
    assert len(cards[0].find_elements(By.CSS_SELECTOR, ".bar-row")) == 7  # one probability bar per class
    canvas = browser.find_element(By.ID, "photo-canvas")
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (1126, 661)
    # The canvas shows the photo with a box around each face: on a box edge its pixels differ from the
    # photo's, away from the faces they are the photo's own.
    photo = cv2.imread(str(PHOTOS / "two_people.jpg"))
    files = {"file": ("two_people.jpg", (PHOTOS / "two_people.jpg").read_bytes(), "image/jpeg")}
    boxes = [f["box"] for f in httpx.post(f"{base_url}v1/predict", files=files, timeout=60).json()["faces"]]
    for x, y, w, h in boxes:
        for px, py in ((x + w // 2, y + h), (x, y + h // 2)):
            rgb = np.array(_canvas_pixel(browser, "photo-canvas", px, py))
            assert np.abs(rgb - photo[py, px, ::-1].astype(int)).max() > 60, (px, py)
    rgb = np.array(_canvas_pixel(browser, "photo-canvas", 560, 600))
    assert np.abs(rgb - photo[600, 560, ::-1].astype(int)).max() < 25
    assert _resources_are_local(browser, base_url) == []
    shot = tmp_path / "serve_photo.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_live_camera_shows_labels_updating(browser, base_url, tmp_path):
    browser.get(base_url)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="live"]').click()
    browser.find_element(By.ID, "live-start").click()
    status = browser.find_element(By.ID, "live-status")

    def frames() -> int:
        return int(status.get_attribute("data-frames") or 0)

    WebDriverWait(browser, 60).until(lambda d: frames() >= 3 and status.get_attribute("data-labels"))
    first = frames()
    seen = set()
    t0 = time.time()
    while time.time() - t0 < 30 and (frames() < first + 5 or not seen):
        seen.update(x for x in (status.get_attribute("data-labels") or "").split(",") if x)
        time.sleep(0.2)
    assert frames() >= first + 5, "the live view stopped updating"
    assert seen and seen <= LABELS
    # The cards are redrawn with every frame: read them in one go.
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('#live-faces .face-card')).map(e => e.getAttribute('aria-label'))")
    assert titles and all(t.startswith("Track #") for t in titles)  # faces are tracked across frames
    shot = tmp_path / "serve_live.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    browser.find_element(By.ID, "live-stop").click()


@pytest.fixture(scope="module")
def webm_clip(tmp_path_factory):
    """The first 30 frames of the real clip as VP8 WebM (a codec every Chromium build plays), starting at 0 s."""
    clip = tmp_path_factory.mktemp("webm") / "clip.webm"
    cap = cv2.VideoCapture(str(VIDEO))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"VP80"), cap.get(cv2.CAP_PROP_FPS), (640, 360))
    for _ in range(30):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
    return clip


def test_video_upload_shows_progress_then_overlays_and_a_timeline(browser, base_url, webm_clip, tmp_path):
    clip = webm_clip
    browser.get(base_url)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="video"]').click()
    browser.find_element(By.ID, "video-input").send_keys(str(clip))
    status = browser.find_element(By.ID, "video-status")
    states = set()

    def finished(_):
        states.add(status.get_attribute("data-state"))
        return status.get_attribute("data-state") in ("done", "failed")

    WebDriverWait(browser, 90, poll_frequency=0.1).until(finished)
    assert status.get_attribute("data-state") == "done", status.text
    assert states & {"uploading", "queued", "running"}  # progress was shown on the way
    # Seek into the clip: the overlay canvas gets the boxes of that frame, the timeline its curves.
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.getElementById('video-player').readyState >= 2"))
    browser.execute_script("const v = document.getElementById('video-player'); v.currentTime = 0.5;")
    drawn = """
        const c = document.getElementById(arguments[0]), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"""
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(drawn, "video-overlay") > 500)
    assert browser.execute_script(drawn, "timeline") > 2000
    browser.execute_script("document.getElementById('timeline').scrollIntoView({block: 'end'})")
    shot = tmp_path / "serve_video.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


# ------------------------------------------------------------------ a new user's first hour (issue 15)


def _open_ui(browser, base_url: str) -> None:
    browser.get(base_url)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))


def _severe_console(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_first_load_shows_no_empty_canvas_panel_or_dead_buttons(browser, base_url):
    _open_ui(browser, base_url)
    for el in ("photo-result", "photo-canvas", "photo-json", "photo-csv"):
        assert not browser.find_element(By.ID, el).is_displayed(), el
    assert browser.execute_script("return getComputedStyle(document.getElementById('photo-result')).display") == "none"
    assert browser.find_element(By.ID, "photo-drop").is_displayed()  # what there is to do is in view
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="live"]').click()
    assert browser.find_element(By.ID, "live-start").is_displayed()
    for el in ("live-result", "live-canvas"):  # no black box before the camera runs
        assert not browser.find_element(By.ID, el).is_displayed(), el
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="video"]').click()
    for el in ("video-job", "video-result", "video-player"):
        assert not browser.find_element(By.ID, el).is_displayed(), el


def test_faces_are_numbered_left_to_right_on_boxes_and_cards_and_highlight_together(browser, base_url):
    from selenium.webdriver.common.action_chains import ActionChains

    photo = PHOTOS / "test_image.jpg"  # 2048x1536, six faces
    _open_ui(browser, base_url)
    browser.find_element(By.ID, "photo-input").send_keys(str(photo))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "photo-result").get_attribute("data-count"))
    files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
    api = sorted(f["box"] for f in httpx.post(f"{base_url}v1/predict", files=files, timeout=60).json()["faces"])
    assert len(api) == 6
    boxes = browser.execute_script("return state.photo.faces.map(f => f.box)")
    assert boxes == sorted(api, key=lambda b: (b[0], b[1]))  # left to right
    cards = browser.find_elements(By.CSS_SELECTOR, "#photo-faces .face-card")
    numbers = [c.find_element(By.CSS_SELECTOR, ".face-number").text for c in cards]
    assert numbers == ["1", "2", "3", "4", "5", "6"]
    tags = browser.find_element(By.ID, "photo-canvas").get_attribute("data-tags").split("|")
    assert [t.split()[0] for t in tags] == numbers  # the box of face n says n, as its card does
    assert [t.split()[1] for t in tags] == [c.get_attribute("data-label") for c in cards]

    # In-page: the canvas before and after a hover, and how many pixels changed near a box and elsewhere.
    snapshot = ("const c = document.getElementById('photo-canvas');"
                "window.before = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;")
    changed = """
        const bx = arguments[0], before = window.before, c = document.getElementById('photo-canvas');
        const now = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let inside = 0, outside = 0;
        for (let i = 0; i < now.length; i += 4) {
            if (now[i] === before[i] && now[i + 1] === before[i + 1] && now[i + 2] === before[i + 2]) continue;
            const x = (i / 4) % c.width, y = Math.floor(i / 4 / c.width);
            if (x >= bx[0] - 40 && x <= bx[0] + bx[2] + 40 && y >= bx[1] - 60 && y <= bx[1] + bx[3] + 40) inside++;
            else outside++;
        }
        return [inside, outside];"""
    browser.execute_script(snapshot)
    # Hovering card 2 draws box 2 thicker, with a white rim, and nothing else.
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cards[1])
    ActionChains(browser).move_to_element(cards[1]).perform()
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "photo-canvas").get_attribute("data-highlight") == "2")
    assert "highlight" in cards[1].get_attribute("class")
    inside, outside = browser.execute_script(changed, boxes[1])
    assert inside > 500 and outside == 0
    # Hovering box 5 on the photo lights up card 5.
    canvas = browser.find_element(By.ID, "photo-canvas")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    scale = canvas.rect["width"] / 2048
    x, y, w, h = boxes[4]
    dx, dy = (x + w / 2) * scale - canvas.rect["width"] / 2, (y + h / 2) * scale - canvas.rect["height"] / 2
    ActionChains(browser).move_to_element_with_offset(canvas, int(dx), int(dy)).perform()
    WebDriverWait(browser, 5).until(lambda d: "highlight" in cards[4].get_attribute("class"))
    assert [("highlight" in c.get_attribute("class")) for c in cards] == [False] * 4 + [True, False]
    assert canvas.get_attribute("data-highlight") == "5"


def test_a_photo_on_the_video_tab_says_a_video_was_expected(browser, base_url, tmp_path):
    _open_ui(browser, base_url)
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="video"]').click()
    status = browser.find_element(By.ID, "video-status")
    jobs = httpx.get(f"{base_url}health", timeout=10).json()["video_jobs"]
    # A .jpg: refused in the browser, before any upload.
    browser.find_element(By.ID, "video-input").send_keys(str(PHOTOS / "kit_with_rose.jpg"))
    WebDriverWait(browser, 10).until(lambda d: status.get_attribute("data-state") == "failed")
    assert "is a photo, not a video" in status.text and "video file (MP4" in status.text
    assert status.is_displayed() and not browser.find_element(By.ID, "video-result").is_displayed()
    assert not browser.find_element(By.ID, "video-progress").is_displayed()
    # A JPEG under a video's name: the server refuses it (415) and the page shows the server's words.
    disguised = tmp_path / "holiday.mp4"
    disguised.write_bytes((PHOTOS / "kit_with_rose.jpg").read_bytes())
    browser.find_element(By.ID, "video-input").send_keys(str(disguised))
    WebDriverWait(browser, 30).until(lambda d: "JPEG image" in status.text)
    assert status.get_attribute("data-state") == "failed"
    assert "holiday.mp4: the upload is a JPEG image, not a video: expected a video file (MP4" in status.text
    assert status.value_of_css_property("color") == "rgba(198, 40, 40, 1)"  # shown as an error
    assert not browser.find_element(By.ID, "video-result").is_displayed()
    assert httpx.get(f"{base_url}health", timeout=10).json()["video_jobs"] == jobs  # no job was made


def test_choose_a_photo_is_reached_with_tab_and_opened_with_enter(browser, base_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open_ui(browser, base_url)  # a fresh page: the focus starts at the top
    reached = []
    for _ in range(12):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached.append(browser.execute_script("return document.activeElement.id || document.activeElement.tagName"))
        if reached[-1] == "photo-input":
            break
    assert reached[-1] == "photo-input", reached  # tabs, model, detector, then the photo button
    label = browser.find_element(By.CSS_SELECTOR, "#photo-drop .file-button")
    assert label.value_of_css_property("outline-style") == "solid"  # the focus is visible on the button
    # Enter opens the file chooser (a click on the input; stopped here before the dialog would open).
    browser.execute_script("""window.chooserOpened = false;
        document.getElementById('photo-input').addEventListener('click', e => { window.chooserOpened = true;
        e.preventDefault(); }, {once: true});""")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert browser.execute_script("return window.chooserOpened") is True


def test_api_docs_pages_load_nothing_from_outside(browser, base_url):
    browser.get(base_url)
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{base_url}redoc")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".menu-content li"))
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "img[alt='redocly logo']"))
    time.sleep(0.5)  # the footer's logo loads after the first render
    assert _resources_are_local(browser, base_url) == []
    assert _severe_console(browser) == []
    browser.get(f"{base_url}docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
    assert _resources_are_local(browser, base_url) == []
    assert _severe_console(browser) == []


def test_a_photo_without_faces_says_so_and_what_to_try(browser, base_url, tmp_path):
    background = tmp_path / "background.jpg"  # the lower left of a real photo: no face in it
    cv2.imwrite(str(background), cv2.imread(str(PHOTOS / "two_people.jpg"))[450:661, 0:400])
    _open_ui(browser, base_url)
    browser.find_element(By.ID, "photo-input").send_keys(str(background))
    result = WebDriverWait(browser, 60).until(
        lambda d: (el := d.find_element(By.ID, "photo-result")).get_attribute("data-count") and el)
    assert result.get_attribute("data-count") == "0"
    note = browser.find_element(By.ID, "photo-empty")
    assert note.is_displayed()
    assert "No face was found" in note.text and "Haar detector" in note.text and "larger image" in note.text
    summary = browser.find_element(By.ID, "photo-summary").text
    assert summary.startswith("No face found in 400×211") and "0 face" not in summary


def _start_live(browser, base_url: str, frames: int = 2) -> None:
    _open_ui(browser, base_url)
    browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="live"]').click()
    browser.find_element(By.ID, "live-start").click()
    WebDriverWait(browser, 60).until(
        lambda d: int(d.find_element(By.ID, "live-status").get_attribute("data-frames") or 0) >= frames)


def test_stop_clears_the_live_view_and_says_stopped(browser, base_url):
    _start_live(browser, base_url)
    assert browser.find_element(By.ID, "live-result").is_displayed()
    browser.find_element(By.ID, "live-stop").click()
    status = browser.find_element(By.ID, "live-status")
    WebDriverWait(browser, 10).until(lambda d: status.get_attribute("data-state") == "stopped")
    assert status.text.startswith("Stopped after") and status.is_displayed()
    assert not browser.find_element(By.ID, "live-result").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#live-faces .face-card") == []
    painted = browser.execute_script("""const c = document.getElementById('live-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;""")
    assert painted == 0  # no last frame left behind
    time.sleep(0.5)
    assert status.get_attribute("data-state") == "stopped"  # no late answer repaints it
    assert browser.find_element(By.ID, "live-start").is_enabled()


def test_the_live_view_sends_the_api_key_as_a_subprotocol_not_in_the_url(browser, base_url):
    _open_ui(browser, base_url)
    key = "ui-secret/key+1"
    try:
        browser.execute_script("""window.sockets = [];
            window.WebSocket = class extends WebSocket {
                constructor(url, protocols) { super(url, protocols); window.sockets.push([String(url), protocols]); } };
            const box = document.getElementById('api-key'); box.value = arguments[0];
            box.dispatchEvent(new Event('change'));""", key)
        browser.find_element(By.CSS_SELECTOR, '.tab-button[data-tab="live"]').click()
        browser.find_element(By.ID, "live-start").click()
        # Frames come back: Chromium accepted the server's answer to the subprotocols it offered.
        WebDriverWait(browser, 60).until(
            lambda d: int(d.find_element(By.ID, "live-status").get_attribute("data-frames") or 0) >= 2)
        (url, protocols), = browser.execute_script("return window.sockets")
        assert "api_key" not in url and "secret" not in url
        import base64

        assert protocols == ["ferkit", "ferkit.key." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")]
        browser.find_element(By.ID, "live-stop").click()
    finally:
        browser.execute_script("localStorage.removeItem('ferkit-api-key')")


def test_annotated_video_plays_in_the_browser(browser, base_url, tmp_path):
    from test_video_writer import clip_with_sound, probe

    clip = clip_with_sound(tmp_path / "clip.mp4", 40)
    with open(clip, "rb") as fh:
        job = httpx.post(f"{base_url}v1/videos", files={"file": ("clip.mp4", fh, "video/mp4")},
                         params={"detect_every": 3}, timeout=60).json()
    t0 = time.time()
    while (state := httpx.get(f"{base_url}v1/videos/{job['id']}?results=false", timeout=10).json())["status"] != "done":
        assert state["status"] in ("queued", "running") and time.time() - t0 < 90, state
        time.sleep(0.3)
    annotated = tmp_path / "annotated.mp4"
    annotated.write_bytes(httpx.get(f"{base_url}v1/videos/{job['id']}/video", timeout=30).content)
    got, source = probe(annotated), probe(clip)
    assert got["codec"] == "h264" and got["pix_fmt"] == "yuv420p" and got["audio"] == "aac"
    assert got["frames"] == source["frames"] == 40 and got["size"] == source["size"] == (640, 360)
    # The download itself, in a <video> element: it starts, and time runs.
    _open_ui(browser, base_url)
    browser.execute_script("""const v = document.createElement('video');
        v.id = 'annotated-test'; v.muted = true; v.src = arguments[0]; document.body.append(v);
        v.play().catch(e => { window.playError = String(e); });""", f"v1/videos/{job['id']}/video")
    playing = "const v = document.getElementById('annotated-test'); return [v.currentTime, v.error && v.error.message]"
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(playing)[0] > 0.4 or d.execute_script(playing)[1])
    current, error = browser.execute_script(playing)
    assert error is None and browser.execute_script("return window.playError || null") is None
    assert current > 0.4
    assert browser.execute_script("return document.getElementById('annotated-test').videoWidth") == 640


@pytest.fixture(scope="module")
def uncertain_url():
    """A second server that answers 'uncertain' below 50 % (ferkit serve --min-confidence 0.5)."""
    from ferkit.app.serve import create_app
    from ferkit.infer.recognizer import RecognizerSettings

    app = create_app(model="default", recognizer=RecognizerSettings(detector="yunet", yunet_path=YUNET, device="cpu",
                                                               min_confidence=0.5))
    with serving(app) as url:
        yield url


def test_an_uncertain_face_is_shown_plainly_in_grey(browser, uncertain_url):
    """Below the server's --min-confidence a face reads 'uncertain' on its card (grey, italic) and its box tag
    ('?'), with the most probable class and its probability still shown; answered faces keep their colour."""
    files = {"file": ("two_people.jpg", (PHOTOS / "two_people.jpg").read_bytes(), "image/jpeg")}
    faces = httpx.post(f"{uncertain_url}v1/predict", files=files, timeout=60).json()["faces"]
    assert "uncertain" in {f["label"] for f in faces}  # the left face's top probability is about a third
    browser.get(uncertain_url)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-select option"))
    browser.find_element(By.ID, "photo-input").send_keys(str(PHOTOS / "two_people.jpg"))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "photo-result").get_attribute("data-count"))
    cards = browser.find_elements(By.CSS_SELECTOR, "#photo-faces .face-card")
    unsure = [c for c in cards if c.get_attribute("data-label") == "uncertain"]
    assert unsure and all("uncertain" in c.get_attribute("class") for c in unsure)
    title = unsure[0].find_element(By.CSS_SELECTOR, ".face-title")
    assert "uncertain (" in title.text and "?" in title.text  # e.g. "1 uncertain (neutral? 34%)"
    colour = browser.execute_script("return getComputedStyle(arguments[0]).color", title)
    r, g, b = (int(v) for v in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3])
    assert r == g == b and r < 140  # grey
    tags = browser.find_element(By.ID, "photo-canvas").get_attribute("data-tags").split("|")
    assert any(" ? " in f" {t} " for t in tags)
    assert all(len(c.find_elements(By.CSS_SELECTOR, ".bar-row")) == 7 for c in cards)  # probabilities still shown
