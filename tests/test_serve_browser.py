"""The web UI of ``ferkit serve`` end to end: a real uvicorn server and headless Chromium (Debian's chromium +
chromium-driver, driven by selenium), with a real photo and Chromium's fake camera playing real faces."""

from __future__ import annotations

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
    from ferkit.app.server import create_app

    app = create_app(model="default", detector="yunet", yunet_path=YUNET, device="cpu")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        if time.time() - t0 > 30 or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=15)


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
        "return Array.from(document.querySelectorAll('#live-faces .face-title')).map(e => e.textContent)")
    assert titles and all(t.startswith("Track #") for t in titles)  # faces are tracked across frames
    shot = tmp_path / "serve_live.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    browser.find_element(By.ID, "live-stop").click()


def test_video_upload_shows_progress_then_overlays_and_a_timeline(browser, base_url, tmp_path):
    clip = tmp_path / "clip.webm"  # VP8 WebM: a codec every Chromium build plays
    cap = cv2.VideoCapture(str(VIDEO))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"VP80"), cap.get(cv2.CAP_PROP_FPS), (640, 360))
    for _ in range(30):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
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
