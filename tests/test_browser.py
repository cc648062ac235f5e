"""The built book in headless Chromium: no console error, no request to another host, typeset maths,
no frozen widget, and the in-browser explorers responding to every control and agreeing with PyTorch.
Needs `make book` first (make test does it) and Debian's chromium and chromium-driver. A full-page
screenshot of every page, and of each explorer state, goes to _build/screenshots/, for a person to
look at; the frame times go to _build/screenshots/explorer_frame_ms.json.
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

from vaelib import checkpoints, data, inference, losses, plots

REPO = Path(__file__).resolve().parent.parent
HTML = REPO / "_build" / "html"
SHOTS = REPO / "_build" / "screenshots"
PAGES = ["book/intro", "chapters/01_data", "chapters/02_autoencoder", "chapters/03_vae", "chapters/04_beta",
         "chapters/05_latent_walk", "chapters/06_conv_vae", "chapters/07_disentanglement", "chapters/08_beyond",
         "chapters/09_loss", "chapters/10_collapse", "chapters/11_conditional", "chapters/12_collection",
         "book/explorer", "book/run"]

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


# ---- no frozen widget ------------------------------------------------------------------------------
WIDGET_MARKS = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json",
                "embed-amd.js", "jupyter-widgets", "require.js")
TWINS = {"chapters/04_beta": "map", "chapters/05_latent_walk": "map", "chapters/07_disentanglement": "sliders"}


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("chapters/")])
def test_no_static_page_holds_a_widget(page):
    html = (HTML / f"{page}.html").read_text()
    assert [mark for mark in WIDGET_MARKS if mark in html] == [], page
    if page in TWINS:  # the chapter's widget became its in-browser twin
        assert f'data-kind="{TWINS[page]}"' in html and "explorer.js" in html


def canvas_pixels(driver, element):
    return driver.execute_script(
        "const c = arguments[0]; return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
        ".filter((v, i) => i % 4 === 0));", element)


def shown_digit(driver, canvas) -> torch.Tensor:
    """The 28x28 image on an enlarged digit canvas, in [0, 1] (the centre of each enlarged pixel)."""
    side = driver.execute_script("return arguments[0].width", canvas)
    scale = side // 28
    pixels = torch.tensor(canvas_pixels(driver, canvas), dtype=torch.float32).view(side, side)
    return pixels[scale // 2 :: scale, scale // 2 :: scale][:28, :28].flatten() / 255


def changes(driver, canvas, action):
    before = canvas_pixels(driver, canvas)
    action()
    return canvas_pixels(driver, canvas) != before


def into_view(driver, element):
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    return driver


def click(driver, element):
    """Click as a reader would, after scrolling the element clear of the page's sticky header."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def shot(driver, name, element):
    """A screenshot of one explorer (the whole element, even where it runs past the window)."""
    # In the window (each explorer fits in it): capturing beyond it would resize the viewport, and the
    # page's lazy images would then move the element.
    box = driver.execute_script("arguments[0].scrollIntoView({block: 'start'}); window.scrollBy(0, -10);"
                                " const r = arguments[0].getBoundingClientRect();"
                                " return [r.left + scrollX, r.top + scrollY, r.width, r.height];", element)
    driver.execute_script("document.querySelectorAll('.bd-header-article, .skip-link, .bd-header')"
                          ".forEach((e) => { e.style.visibility = 'hidden'; })")  # sticky: they would cover the shot
    clip = {"x": box[0] - 8, "y": box[1] - 8, "width": box[2] + 16, "height": box[3] + 16, "scale": 1}
    image = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "clip": clip})
    (SHOTS / f"explorer_{name}.png").write_bytes(base64.b64decode(image["data"]))
    driver.execute_script("document.querySelectorAll('.bd-header-article, .skip-link, .bd-header')"
                          ".forEach((e) => { e.style.visibility = ''; })")


def run_js(driver, script, *args):
    """Run an async snippet (it may await) and return its value."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {script} }})().then(done, (e) => done('JS error: ' + e));", *args)


@pytest.fixture(scope="module")
def mnist():
    return data.load_mnist("test")


@pytest.fixture(scope="module")
def explorer_page(browser, base_url):
    open_page(browser, base_url, "book/explorer")
    browser.set_script_timeout(60)
    wait_for(browser, "return window.vaeExplorer && window.vaeExplorer.explorers.map")
    run_js(browser, "const e = window.vaeExplorer.explorers; await e.map[0].ready;"
                    " await e.interpolate[0].ready; await e.inpaint[0].ready;")
    return browser


def test_chapter_twins_respond(browser, base_url):
    from selenium.webdriver.common.by import By
    browser.set_script_timeout(60)
    open_page(browser, base_url, "chapters/04_beta")
    wait_for(browser, "return window.vaeExplorer && window.vaeExplorer.explorers.map")
    run_js(browser, "await window.vaeExplorer.explorers.map[0].ready;")
    root = browser.find_element(By.CSS_SELECTOR, ".vae-explorer[data-kind=map]")
    plane = root.find_element(By.CSS_SELECTOR, ".vae-map")
    shot(browser, "chapter4_beta1", root)
    assert changes(browser, plane, lambda: (click(browser, root.find_element(By.CSS_SELECTOR, "input[value='vae-l2-b0']")),
                                            wait_for(browser, "return window.vaeExplorer.explorers.map[0].state.loaded === 'vae-l2-b0'")))
    shot(browser, "chapter4_beta0", root)

    open_page(browser, base_url, "chapters/05_latent_walk")
    wait_for(browser, "return window.vaeExplorer && window.vaeExplorer.explorers.map")
    run_js(browser, "await window.vaeExplorer.explorers.map[0].ready;")
    digit = browser.find_element(By.CSS_SELECTOR, ".vae-explorer .vae-digit")
    assert changes(browser, digit, lambda: browser.execute_script(
        "const s = window.vaeExplorer.explorers.map[0].sliders[0]; s.value = 2.5; s.dispatchEvent(new Event('input'));"))
    assert browser.execute_script("return window.vaeExplorer.explorers.map[0].state.z")[0] == 2.5
    shot(browser, "chapter5_sliders", browser.find_element(By.CSS_SELECTOR, ".vae-explorer"))

    open_page(browser, base_url, "chapters/07_disentanglement")
    wait_for(browser, "return window.vaeExplorer && window.vaeExplorer.explorers.sliders")
    assert not any("convvae" in name for name in browser.execute_script("return window.vaeExplorer.requested"))
    run_js(browser, "await window.vaeExplorer.explorers.sliders[0].start();")
    digit = browser.find_element(By.CSS_SELECTOR, ".vae-explorer .vae-digit")
    assert changes(browser, digit, lambda: browser.execute_script(
        "const s = window.vaeExplorer.explorers.sliders[0].sliders[4]; s.value = 2; s.dispatchEvent(new Event('input'));"))
    shot(browser, "chapter7_sliders", browser.find_element(By.CSS_SELECTOR, ".vae-explorer"))


def draw_stroke(browser, pad, points):
    from selenium.webdriver.common.action_chains import ActionChains
    size = pad.size["width"]
    chain = ActionChains(browser).move_to_element_with_offset(pad, *[int((v - 0.5) * size) for v in points[0]])
    chain.click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        chain.move_by_offset(int((x1 - x0) * size), int((y1 - y0) * size))
    chain.release().perform()


def test_drawing_encodes_like_pytorch(explorer_page):
    from selenium.webdriver.common.by import By
    browser = explorer_page
    root = browser.find_element(By.CSS_SELECTOR, ".vae-explorer[data-kind=map]")
    pad, plane = root.find_element(By.CSS_SELECTOR, ".vae-pad"), root.find_element(By.CSS_SELECTOR, ".vae-map")
    before = canvas_pixels(browser, plane)
    # a 7: the top bar, then the long diagonal
    draw_stroke(browser, pad, [(0.25, 0.2), (0.45, 0.2), (0.75, 0.2), (0.6, 0.45), (0.5, 0.65), (0.42, 0.85)])
    assert canvas_pixels(browser, plane) != before  # the ellipses and the point moved
    shot(browser, "drawn_beta1", root)
    state = browser.execute_script("const s = window.vaeExplorer.explorers.map[0].state;"
                                   " return {x: Array.from(s.encoding.x), mu: s.encoding.mu, logvar: s.encoding.logvar, z: s.z};")
    x = torch.tensor(state["x"])
    # prepared as MNIST's digits were: a 20-pixel box, centre of mass on pixel (14, 14)
    picture = x.view(28, 28)
    rows, columns = picture.sum(1).nonzero(), picture.sum(0).nonzero()
    assert max(rows.max() - rows.min() + 1, columns.max() - columns.min() + 1) <= 21
    grid = torch.arange(28.0)
    centre = ((picture.sum(1) * grid).sum() / picture.sum(), (picture.sum(0) * grid).sum() / picture.sum())
    assert abs(centre[0] - 14) <= 0.5 and abs(centre[1] - 14) <= 0.5, centre
    model, _ = checkpoints.load("vae-l2-b1")
    with torch.no_grad():
        mu, logvar = model.encode(x[None])
        x_hat = model.decode(mu)
    assert (torch.tensor(state["mu"]) - mu[0]).abs().max() < 1e-3
    assert (torch.tensor(state["logvar"]) - logvar[0]).abs().max() < 1e-3
    digit = root.find_element(By.CSS_SELECTOR, ".vae-digit")
    assert (shown_digit(browser, digit) - x_hat[0]).abs().max() <= 1 / 255 + 1e-3
    readout = root.find_element(By.CSS_SELECTOR, ".vae-readout").text
    bce = losses.bce(x_hat, x[None]).item()
    kl = losses.kl_to_standard_normal(mu, logvar).item()
    assert f"BCE = {bce:.1f}" in readout and f"KL  = {kl:.2f}" in readout, (readout, bce, kl)
    # Sample: z = mu + sigma * eps, with eps shown
    assert changes(browser, digit, lambda: click(browser, root.find_element(By.CSS_SELECTOR, ".vae-sample")))
    sampled = browser.execute_script("const s = window.vaeExplorer.explorers.map[0].state; return [s.z, s.eps];")
    z, eps = torch.tensor(sampled[0]), torch.tensor(sampled[1])
    assert torch.allclose(z, mu[0] + (logvar[0] / 2).exp() * eps, atol=1e-4)
    assert "eps =" in root.find_element(By.CSS_SELECTOR, ".vae-readout").text
    shot(browser, "sampled", root)
    assert changes(browser, digit, lambda: click(browser, root.find_element(By.CSS_SELECTOR, ".vae-use-mean")))
    # every model: the map changes, and the drawing is encoded again by that model's encoder
    for name, half in (("vae-l2-b0", 15), ("vae-l2-b4", 2), ("autoencoder-l2-linear", 20)):
        assert changes(browser, plane, lambda: (
            click(browser, root.find_element(By.CSS_SELECTOR, f"input[value='{name}']")),
            wait_for(browser, f"return window.vaeExplorer.explorers.map[0].state.loaded === '{name}'")))
        assert browser.execute_script("return window.vaeExplorer.explorers.map[0].state.view.half") > half
        model, _ = checkpoints.load(name)
        with torch.no_grad():
            code = model.encode(x[None])[0][0]
        shown = browser.execute_script("return window.vaeExplorer.explorers.map[0].state.encoding.mu")
        assert (torch.tensor(shown) - code).abs().max() < 1e-3, name
        shot(browser, f"drawn_{name}", root)
    assert root.find_element(By.CSS_SELECTOR, ".vae-sample").get_attribute("disabled")  # no sigma to sample with
    assert "no KL term" in root.find_element(By.CSS_SELECTOR, ".vae-readout").text
    assert changes(browser, pad, lambda: click(browser, root.find_element(By.CSS_SELECTOR, ".vae-clear")))


def test_map_zooms_pans_and_shows_a_clicked_test_digit(explorer_page, mnist):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    browser = explorer_page
    root = browser.find_element(By.CSS_SELECTOR, ".vae-explorer[data-kind=map]")
    plane = root.find_element(By.CSS_SELECTOR, ".vae-map")
    click(browser, browser.find_element(By.CSS_SELECTOR, "input[value='vae-l2-b1']"))
    wait_for(browser, "return window.vaeExplorer.explorers.map[0].state.loaded === 'vae-l2-b1'")
    view = lambda: browser.execute_script("return window.vaeExplorer.explorers.map[0].state.view")
    half = view()["half"]
    assert changes(browser, plane, lambda: click(browser, root.find_element(By.CSS_SELECTOR, "[data-zoom=in]")))
    assert view()["half"] < half
    assert changes(browser, plane, lambda: click(browser, root.find_element(By.CSS_SELECTOR, "[data-zoom=out]")))
    assert changes(browser, plane, lambda: ActionChains(into_view(browser, plane)).move_to_element_with_offset(plane, 150, 150)
                   .click_and_hold().move_by_offset(-60, 40).release().perform())  # pan: drag off the point
    assert view()["cx"] > 0 and view()["cy"] > 0
    assert changes(browser, plane, lambda: ActionChains(browser).scroll_from_origin(
        ScrollOrigin.from_element(plane), 0, -200).perform())  # the wheel zooms
    click(browser, root.find_element(By.CSS_SELECTOR, "[data-zoom=fit]"))
    # drag the point: z follows, and the digit is vae.decode(z)
    digit = root.find_element(By.CSS_SELECTOR, ".vae-digit")
    before = [0.5, 0.5]
    browser.execute_script("const m = window.vaeExplorer.explorers.map[0]; m.state.z = arguments[0]; m.update();", before)
    start = browser.execute_script("const m = window.vaeExplorer.explorers.map[0]; return m.toCanvas(m.state.z)")
    width = browser.execute_script("return arguments[0].width", plane)
    css = plane.size["width"] / width
    assert changes(browser, digit, lambda: ActionChains(into_view(browser, plane)).move_to_element_with_offset(
        plane, int((start[0] - width / 2) * css), int((start[1] - width / 2) * css)).click_and_hold()
        .move_by_offset(-70, 50).release().perform())
    z = browser.execute_script("return window.vaeExplorer.explorers.map[0].state.z")
    assert z[0] < before[0] - 0.5 and z[1] < before[1] - 0.5  # left and down: z1 across, z2 up
    model, _ = checkpoints.load("vae-l2-b1")
    with torch.no_grad():
        assert (shown_digit(browser, digit) - model.decode(torch.tensor([z]))[0]).abs().max() <= 1 / 255 + 1e-3
    # click a test dot: its digit, reconstruction and label
    n = 7
    with torch.no_grad():
        mu = model.encode(mnist[0][n : n + 1])[0]
    browser.execute_script("window.vaeExplorer.explorers.map[0].setView({cx: arguments[0], cy: arguments[1], half: 0.3})",
                           *mu[0].tolist())  # zoomed in on test digit n's dot
    dot = browser.execute_script("const m = window.vaeExplorer.explorers.map[0]; return m.toCanvas(arguments[0])", mu[0].tolist())
    ActionChains(into_view(browser, plane)).move_to_element_with_offset(plane, int((dot[0] - width / 2) * css),
                                                      int((dot[1] - width / 2) * css)).click().perform()
    wait_for(browser, "return window.vaeExplorer.explorers.map[0].state.selected !== null")
    chosen = browser.execute_script("return window.vaeExplorer.explorers.map[0].state.selected")
    inspect = root.find_element(By.CSS_SELECTOR, ".vae-inspect")
    assert f"label {int(mnist[1][chosen])}" in inspect.text
    run_js(browser, "await window.vaeExplorer.load('mnist-test');")
    assert (shown_digit(browser, inspect.find_element(By.CSS_SELECTOR, ".vae-test")) - mnist[0][chosen]).abs().max() < 1e-6
    with torch.no_grad():
        recon = model.decode(model.encode(mnist[0][chosen : chosen + 1])[0])[0]
    assert (shown_digit(browser, inspect.find_element(By.CSS_SELECTOR, ".vae-recon")) - recon).abs().max() <= 1 / 255 + 1e-3
    click(browser, root.find_element(By.CSS_SELECTOR, "[data-zoom=fit]"))
    shot(browser, "clicked_dot", root)


def test_mlp_models_match_pytorch(explorer_page, mnist):
    for name in ("vae-l2-b0", "vae-l2-b1", "vae-l2-b4", "autoencoder-l2-linear"):
        model, _ = checkpoints.load(name)
        for n in (0, 1, 4242):
            got = run_js(explorer_page, "return await window.vaeExplorer.encode(arguments[0], arguments[1]);",
                         name, mnist[0][n].tolist())
            with torch.no_grad():
                mu, logvar = model.encode(mnist[0][n : n + 1])
            assert (torch.tensor(got["mu"]) - mu[0]).abs().max() < 1e-3, (name, n)
            if logvar is not None:
                assert (torch.tensor(got["logvar"]) - logvar[0]).abs().max() < 1e-3, (name, n)
        for z in ([0.0, 0.0], [1.5, -2.0], [-12.0, 7.5]):
            got = run_js(explorer_page, "return await window.vaeExplorer.decode(arguments[0], arguments[1]);", name, z)
            with torch.no_grad():
                assert (torch.tensor(got) - model.decode(torch.tensor([z]))[0]).abs().max() < 1e-3, (name, z)


def test_ten_sliders_combine_and_match_pytorch(explorer_page, base_url):
    from selenium.webdriver.common.by import By
    browser = explorer_page
    network = [u for u in requested_urls(browser) if "convvae" in u]
    assert network == [] and "convvae" not in str(browser.execute_script("return window.vaeExplorer.requested"))
    root = browser.find_element(By.CSS_SELECTOR, ".vae-explorer[data-kind=sliders]")
    digit = root.find_element(By.CSS_SELECTOR, ".vae-digit")
    assert changes(browser, digit, lambda: (click(browser, root.find_element(By.CSS_SELECTOR, ".vae-start")),
                                            wait_for(browser, "return window.vaeExplorer.explorers.sliders[0].net()", 60)))
    assert "convvae-l10-b1" in browser.execute_script("return window.vaeExplorer.requested")  # loaded when started
    move = "const s = window.vaeExplorer.explorers.sliders[0].sliders[arguments[0]]; s.value = arguments[1];" \
           " s.dispatchEvent(new Event('input'));"
    for unit in range(10):  # every slider changes the digit
        assert changes(browser, digit, lambda: browser.execute_script(move, unit, 2.5)), unit
        browser.execute_script(move, unit, 0)
    for unit, value in ((2, 1.5), (5, -2.0), (8, 0.75)):  # each slider moves on its own; the others stay
        assert changes(browser, digit, lambda: browser.execute_script(move, unit, value))
    z = browser.execute_script("return window.vaeExplorer.explorers.sliders[0].state.z")
    assert z == [0, 0, 1.5, 0, 0, -2.0, 0, 0, 0.75, 0]
    shot(browser, "ten_sliders_beta1", root)
    worst = 0.0
    for name in ("convvae-l10-b1", "convvae-l10-b4"):
        model, _ = checkpoints.load(name)
        torch.manual_seed(0)
        for point in [z, [0.0] * 10, *torch.randn(3, 10).mul(1.5).tolist()]:
            got = torch.tensor(run_js(browser, "return await window.vaeExplorer.decode(arguments[0], arguments[1]);", name, point))
            with torch.no_grad():
                worst = max(worst, (got - model.decode(torch.tensor([point]))[0]).abs().max().item())
        if name == "convvae-l10-b1":
            with torch.no_grad():
                expected = model.decode(torch.tensor([z]))[0]
            assert (shown_digit(browser, digit) - expected).abs().max() <= 1 / 255 + 1e-3
    print(f"\nconv decoder: largest pixel difference from PyTorch {worst:.2e}")
    assert worst < 1e-3
    assert changes(browser, digit, lambda: (click(browser, root.find_element(By.CSS_SELECTOR, "input[value='convvae-l10-b4']")),
                                            wait_for(browser, "return window.vaeExplorer.explorers.sliders[0].state.loaded"
                                                              " === 'convvae-l10-b4'", 60)))
    shot(browser, "ten_sliders_beta4", root)
    for button in ("vae-random", "vae-reset"):
        assert changes(browser, digit, lambda: click(browser, root.find_element(By.CSS_SELECTOR, f".{button}")))


def test_interpolation_matches_pytorch(explorer_page, mnist):
    from selenium.webdriver.common.by import By
    browser = explorer_page
    root = browser.find_element(By.CSS_SELECTOR, ".vae-explorer[data-kind=interpolate]")
    model, _ = checkpoints.load("vae-l2-b1")
    latent, pixel = plots.interpolate(model, mnist[0][3], mnist[0][2], steps=10)  # chapter 5's pair
    for k in (0, 4, 9):
        got = browser.execute_script("return window.vaeExplorer.explorers.interpolate[0].blend(arguments[0])"
                                     ".map((a) => Array.from(a))", k / 9)
        assert (torch.tensor(got[0]) - latent[k]).abs().max() < 1e-3
        assert (torch.tensor(got[1]) - pixel[k]).abs().max() < 1e-5
    shot(browser, "interpolation", root)
    blend = root.find_element(By.CSS_SELECTOR, ".vae-latent")
    assert changes(browser, blend, lambda: browser.execute_script(
        "const t = window.vaeExplorer.explorers.interpolate[0].t; t.value = 0.1; t.dispatchEvent(new Event('input'));"))
    strip = root.find_element(By.CSS_SELECTOR, ".vae-strip-latent")
    pad = root.find_element(By.CSS_SELECTOR, ".vae-slot-b canvas")
    assert changes(browser, strip, lambda: draw_stroke(browser, pad, [(0.5, 0.15), (0.5, 0.5), (0.52, 0.85)]))
    assert changes(browser, strip, lambda: (click(browser, root.find_element(By.CSS_SELECTOR, ".vae-slot-a .vae-random-test")),
                                            run_js(browser, "await window.vaeExplorer.load('mnist-test');")))
    browser.execute_script("window.vaeExplorer.explorers.map[0].inspect(42)")  # as if dot 42 was clicked
    assert changes(browser, strip, lambda: (click(browser, root.find_element(By.CSS_SELECTOR, ".vae-slot-b .vae-clicked-test")),
                                            run_js(browser, "await window.vaeExplorer.load('mnist-test');")))
    shot(browser, "interpolation_drawn", root)


def test_inpainting_is_chapter_8s_posterior_mean_and_the_loop_on_request(explorer_page, mnist):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    browser = explorer_page
    root = browser.find_element(By.CSS_SELECTOR, ".vae-explorer[data-kind=inpaint]")
    model, _ = checkpoints.load("vae-l2-b1")
    x = mnist[0][0]
    visible = torch.ones(28, 28, dtype=torch.bool)
    visible[14:] = False
    visible = visible.flatten()
    # The page's default: the posterior mean given the top half, summed on vaelib.grid's points (step 0.05)
    exact = inference.complete_on_grid(model, x[None], visible[None])["mean"][0]
    completed = "return Array.from(window.vaeExplorer.explorers.inpaint[0].state.completed)"
    got = torch.tensor(browser.execute_script(completed))
    assert (got - exact).abs().max() < 1e-3
    shot(browser, "inpainting_bottom", root)
    seconds = browser.execute_script(
        "const e = window.vaeExplorer.explorers.inpaint[0], x = e.slot.x, t = performance.now();"
        "for (let r = 0; r < 5; r++) e.complete(x, e.state.hidden); return (performance.now() - t) / 5000;")
    print(f"posterior completion in the browser: {1000 * seconds:.1f} ms per call")
    assert seconds < 0.5  # fast enough to follow the brush (about 0.03-0.2 s on 2 cores of an AMD EPYC Zen 4)
    filled = torch.where(visible, x, torch.full_like(x, 0.5))  # the heuristic loop, inference.complete_by_loop
    with torch.no_grad():
        for _ in range(20):
            filled = torch.where(visible, x, model.decode(model.encode(filled[None])[0])[0])
    browser.execute_script("const m = arguments[0].querySelector('.vae-method'); m.value = 'loop';"
                           " m.dispatchEvent(new Event('change'));", root)
    assert (torch.tensor(browser.execute_script(completed)) - filled).abs().max() < 1e-3
    completed = root.find_element(By.CSS_SELECTOR, ".vae-completed")
    assert changes(browser, completed, lambda: click(browser, root.find_element(By.CSS_SELECTOR, "[data-hide=left]")))
    assert changes(browser, completed, lambda: browser.execute_script(
        "const r = arguments[0].querySelector('.vae-rounds'); r.value = 2; r.dispatchEvent(new Event('input'));", root))
    assert changes(browser, completed, lambda: (click(browser, root.find_element(By.CSS_SELECTOR, ".vae-random-test")),
                                                run_js(browser, "await window.vaeExplorer.load('mnist-test');")))
    mask = root.find_element(By.CSS_SELECTOR, ".vae-mask")
    click(browser, root.find_element(By.CSS_SELECTOR, "[data-hide=none]"))
    assert changes(browser, mask, lambda: ActionChains(browser).move_to_element_with_offset(mask, -40, -30).click_and_hold()
                   .move_by_offset(60, 10).release().perform())
    assert browser.execute_script("return window.vaeExplorer.explorers.inpaint[0].state.hidden.some((h) => h)")
    shot(browser, "inpainting_painted", root)


def test_frame_times(explorer_page):
    """Drawing (stroke + MNIST preparation), encoding (encoder + decoder + map), the conv decoder."""
    from selenium.webdriver.common.by import By
    browser = explorer_page
    browser.execute_script("for (const k in window.vaeExplorer.timings) window.vaeExplorer.timings[k].length = 0")
    pad = browser.find_element(By.CSS_SELECTOR, ".vae-explorer[data-kind=map] .vae-pad")
    draw_stroke(browser, pad, [(0.3 + 0.02 * i, 0.2 + 0.03 * i) for i in range(20)])
    run_js(browser, "await window.vaeExplorer.explorers.sliders[0].start();")
    browser.execute_script("""
        const s = window.vaeExplorer.explorers.sliders[0];
        for (let i = 0; i < 40; i++) { s.state.z[i % 10] = Math.sin(i); s.redraw(); }""")
    timings = browser.execute_script("return window.vaeExplorer.timings")
    report = {kind: {"median_ms": statistics.median(t), "max_ms": max(t), "frames": len(t)}
              for kind, t in timings.items() if t}
    (SHOTS / "explorer_frame_ms.json").write_text(json.dumps(report, indent=1))
    print("\n" + "\n".join(f"{kind:>7}: median {r['median_ms']:.2f} ms, max {r['max_ms']:.2f} ms over {r['frames']} frames"
                           for kind, r in report.items()))
    assert report["conv"]["median_ms"] <= 30
    assert report["encode"]["median_ms"] <= 10 and report["draw"]["median_ms"] <= 30


def test_run_page_offers_the_course_and_shows_the_repository_only_when_set(browser, base_url):
    import hashlib
    import urllib.request

    import yaml
    setting = str(yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"])
    open_page(browser, base_url, "book/run")
    shown = browser.find_elements("css selector", ".repository-url")
    if setting.startswith(("https://", "http://", "git@")):
        assert shown[0].text == setting and setting in browser.find_element("css selector", "pre").text
    else:
        assert shown == [] and "git clone" not in browser.find_element("css selector", "pre").text  # never invented
    link = browser.find_element("css selector", "a.course-download").get_attribute("href")
    with urllib.request.urlopen(link) as response:  # the archive, from the page's own link
        payload = response.read()
    assert hashlib.sha256(payload).hexdigest() == browser.find_element("css selector", ".course-sha256").text
    assert f"{len(payload) / 2**20:.1f} MB" in browser.find_element("css selector", "article").text
    header = browser.find_element("css selector", ".btn-download-course-button")
    assert header.get_attribute("href") == link  # the header bar of every page offers the same file
    navbar = browser.find_element("css selector", ".bd-sidebar-primary, nav.bd-links")
    assert "Run it yourself" in navbar.text
