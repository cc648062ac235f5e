"""The built book in headless Chromium: no console error, no request to another host, typeset maths,
frozen widgets, and the in-browser explorers agreeing with PyTorch. Needs `make book` first (make test
does it) and Debian's chromium and chromium-driver. A full-page screenshot of every page goes to
_build/screenshots/, for a person to look at.
"""
import base64
import http.server
import json
import statistics
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from vaelib import checkpoints, plots

REPO = Path(__file__).resolve().parent.parent
HTML = REPO / "_build" / "html"
SHOTS = REPO / "_build" / "screenshots"
PAGES = ["book/intro", "chapters/01_data", "chapters/02_autoencoder", "chapters/03_vae", "chapters/04_beta",
         "chapters/05_latent_walk", "chapters/06_conv_vae", "chapters/07_disentanglement", "chapters/08_beyond",
         "book/explorer"]

pytestmark = pytest.mark.skipif(not (HTML / "book" / "explorer.html").exists(),
                                reason="the book is not built: run `make book` (make test does)")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base_url():
    handler = partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for(driver, script, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def save_full_page_screenshot(driver, path: Path, max_height: int = 30000) -> None:
    """The whole page, not just the window: Chromium's DevTools capture beyond the viewport."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))


def open_page(driver, base_url, page):
    driver.get_log("browser"), driver.get_log("performance")  # drop what earlier pages left
    driver.get(base_url + page + ".html")
    wait_for(driver, "return document.readyState === 'complete'")


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_offline_without_errors(browser, base_url, page):
    open_page(browser, base_url, page)
    if browser.execute_script("return document.querySelector('.math, mjx-container, .MathJax') !== null"):
        wait_for(browser, "return document.querySelector('mjx-container') !== null")
    browser.execute_script("window.scrollTo(0, 0)")
    save_full_page_screenshot(browser, SHOTS / (page.replace("/", "_") + ".png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    network = [u for u in requested_urls(browser) if u.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))]
    foreign = [u for u in network if not u.startswith(base_url)]  # (chrome:// and data: are not the network)
    assert foreign == [], f"{page} requests other hosts: {foreign}"


def test_equations_are_typeset(browser, base_url):
    open_page(browser, base_url, "chapters/03_vae")
    count = wait_for(browser, "const n = document.querySelectorAll('mjx-container').length; return n > 3 && n")
    assert count > 3


def test_frozen_widget_state_renders(browser, base_url):
    open_page(browser, base_url, "chapters/05_latent_walk")
    sliders = wait_for(browser, "const n = document.querySelectorAll('.widget-slider, .widget-hslider').length;"
                                " return n >= 2 && n")
    assert sliders >= 2
    image = browser.execute_script("const i = document.querySelector('.jupyter-widgets img, .widget-image');"
                                   " return i && i.naturalWidth")
    assert image == 28 * 5  # the decoded digit from the saved widget state, 5x enlarged


@pytest.mark.parametrize("page, sliders", [("chapters/05_latent_walk", 2), ("chapters/07_disentanglement", 10)])
def test_decoded_digit_keeps_its_square_shape(browser, base_url, page, sliders):
    """A flex row stretches its children to the tallest one: ten sliders must not stretch the digit."""
    open_page(browser, base_url, page)
    wait_for(browser, f"return document.querySelectorAll('.widget-slider, .widget-hslider').length >= {sliders}")
    width, height = browser.execute_script(
        "const i = document.querySelector('.widget-image'); return [i.clientWidth, i.clientHeight]")
    assert (width, height) == (28 * 5, 28 * 5), f"the digit is drawn {width} x {height} px on {page}"


def canvas_pixels(driver, selector):
    return driver.execute_script(
        f"const c = document.querySelector('{selector}');"
        " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 === 0));")


def test_plane_explorer_follows_the_pointer_and_matches_pytorch(browser, base_url):
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, base_url, "book/explorer")
    wait_for(browser, "return window.vaeExplorer !== undefined")
    before = canvas_pixels(browser, "[data-kind=plane] .vae-digit")
    plane = browser.find_element("css selector", "[data-kind=plane] .vae-plane")
    ActionChains(browser).move_to_element_with_offset(plane, -60, 40).click_and_hold().move_by_offset(-50, 30) \
        .release().perform()
    after = canvas_pixels(browser, "[data-kind=plane] .vae-digit")
    assert before != after
    z = browser.execute_script("return window.vaeExplorer.explorers.plane.state.z")
    assert z[0] < -1  # left of the centre, where we dragged
    model, _ = checkpoints.load("vae-l2-b1")
    points = [[0.0, 0.0], [1.5, -2.0], [-2.7, 0.3], list(map(float, z))]
    for point in points:
        in_browser = torch.tensor(browser.execute_script("return window.vaeExplorer.decode('1', arguments[0])", point))
        with torch.no_grad():
            in_pytorch = model.decode(torch.tensor([point]))[0]
        assert (in_browser - in_pytorch).abs().max() < 1e-3, point
    shown = torch.tensor(after, dtype=torch.float32).view(168, 168)[3::6, 3::6] / 255  # 6x enlarged canvas
    with torch.no_grad():
        expected = model.decode(torch.tensor([list(map(float, z))]))[0].view(28, 28)
    assert (shown - expected).abs().max() <= 1 / 255 + 1e-6


def test_beta_switch_changes_the_decoder(browser, base_url):
    open_page(browser, base_url, "book/explorer")
    wait_for(browser, "return window.vaeExplorer !== undefined")
    before = canvas_pixels(browser, "[data-kind=plane] .vae-plane")
    browser.find_element("css selector", "[data-kind=plane] input[value='4']").click()
    assert canvas_pixels(browser, "[data-kind=plane] .vae-plane") != before  # the means moved


def test_traversal_sliders_show_pytorch_frames_exactly(browser, base_url):
    open_page(browser, base_url, "book/explorer")
    wait_for(browser, "return window.vaeExplorer !== undefined")
    before = canvas_pixels(browser, "[data-kind=traversal] .vae-digit")
    browser.execute_script("const s = window.vaeExplorer.explorers.traversal.sliders[2];"
                           " s.value = 18; s.dispatchEvent(new Event('input'));")
    assert canvas_pixels(browser, "[data-kind=traversal] .vae-digit") != before
    state = browser.execute_script("return window.vaeExplorer.explorers.traversal.state")
    assert state["unit"] == 2 and state["step"] == 18
    for beta, name in (("1", "convvae-l10-b1"), ("4", "convvae-l10-b4")):
        model, _ = checkpoints.load(name)
        expected = plots.traversals(model, -3.0, 3.0, 21)  # (10*21, 784)
        for unit, step in ((2, 18), (7, 0), (0, 10)):
            frame = browser.execute_script(
                "return Array.from(window.vaeExplorer.explorers.traversal.frame(arguments[0], arguments[1], arguments[2]))",
                beta, unit, step)
            assert torch.equal(torch.tensor(frame, dtype=torch.float32), expected[unit * 21 + step]), (beta, unit, step)


def test_a_frame_takes_under_5_ms(browser, base_url):
    open_page(browser, base_url, "book/explorer")
    wait_for(browser, "return window.vaeExplorer !== undefined")
    timings = browser.execute_script("""
        const plane = window.vaeExplorer.explorers.plane;
        window.vaeExplorer.timings.length = 0;
        for (let i = 0; i < 200; i++) { plane.state.z = [Math.sin(i / 10) * 3, Math.cos(i / 7) * 3]; plane.redraw(); }
        return window.vaeExplorer.timings.slice();""")
    median = statistics.median(timings)
    (SHOTS / "explorer_frame_ms.json").write_text(json.dumps({"median_ms": median, "max_ms": max(timings),
                                                              "frames": len(timings)}))
    print(f"\nexplorer frame (decode + draw): median {median:.3f} ms, max {max(timings):.3f} ms")
    assert median < 5.0
