"""The web page at / in a real headless browser (Debian's chromium, driven by Playwright): it loads the
model's facts, the budget slider moves the GFLOPs and latency labels, Generate shows an image, Compare
shows one image per budget, and the live status fills in. Set ELIT_PAGE_SCREENSHOT=PATH to keep a
screenshot (docs/images/serve-page.png is made so)."""
import os
import shutil
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="pip install 'elit-diffusion[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (scripts/setup.sh does)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium "
                                                         "(scripts/setup.sh does, as root)")

import uvicorn  # noqa: E402

from elit.serve.app import create_app  # noqa: E402
from test_serve_app import free_port, service, tiny_model  # noqa: E402


def serving(svc):
    """`svc` served on a free loopback port in a thread; yields (url, svc) and stops it after."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app([svc]), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(300):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", svc
    srv.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def server():
    yield from serving(service(tiny_model()))


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    from test_prompts import save_text_model
    from test_serve_app import text_service
    yield from serving(text_service(save_text_model(tmp_path_factory.mktemp("t2i") / "tiny-t2i")))


def browse(url, test):
    """Run test(page) on `url` in headless chromium; page errors fail it."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            test(page)
            assert not errors
        finally:
            browser.close()


def test_page_slider_generate_compare_and_status(server, tmp_path):
    url, svc = server

    def check(page):
        page.wait_for_function("document.querySelectorAll('#class option').length === 10")
        full_gflops = page.text_content("#gflops")
        assert page.text_content("#budget-label") == f"budget {svc.budgets[-1]}"
        page.focus("#budget")
        page.keyboard.press("Home")                       # slide to the lowest budget
        assert page.text_content("#budget-label") == f"budget {svc.budgets[0]}"
        low_gflops = page.text_content("#gflops")
        assert low_gflops != full_gflops and float(low_gflops.split()[0]) < float(full_gflops.split()[0])
        info = svc.info()["budgets"][0]
        assert float(low_gflops.split()[0]) == pytest.approx(info["gflops_per_image"]["none"], abs=1e-3)
        assert "predicted" in page.text_content("#latency") and "ms" in page.text_content("#latency")

        page.select_option("#class", "3")
        page.fill("#seed", "5")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#image').complete && "
                               "document.querySelector('#image').naturalWidth > 0 && !document.querySelector('#image').hidden")
        meta = page.text_content("#meta")
        assert f"budget {svc.budgets[0]}," in meta and "GFLOPs/image" in meta
        assert page.text_content("#error") == ""

        page.click("#compare")
        page.wait_for_function(f"document.querySelectorAll('#compare-row img').length === {len(svc.budgets)} && "
                               "[...document.querySelectorAll('#compare-row img')].every(i => i.complete && i.naturalWidth > 0)")
        captions = page.locator("#compare-row figcaption").all_text_contents()
        assert [c.split(":")[0] for c in captions] == [f"budget {b}" for b in svc.budgets]

        # the live status (polled every second) catches up with the 1 + len(budgets) batches run
        page.wait_for_function(f"document.querySelectorAll('#recent div').length === {1 + len(svc.budgets)}")
        assert f"{1 + len(svc.budgets)} images served" in page.text_content("#status")
        shot = os.environ.get("ELIT_PAGE_SCREENSHOT") or str(tmp_path / "page.png")
        page.screenshot(path=shot, full_page=True)
        assert os.path.getsize(shot) > 10_000

    browse(url, check)


def test_a_text_models_page_has_a_prompt_box_beside_the_budget_slider(text_server):
    url, svc = text_server
    image_shown = ("document.querySelector('#image').complete && document.querySelector('#image').naturalWidth > 0 "
                   "&& !document.querySelector('#image').hidden")

    def test(page):
        page.wait_for_function("document.querySelector('#model-name').textContent.length > 0")
        assert page.is_visible("#prompt") and not page.is_visible("#class")
        assert not page.is_visible("#negative")           # only with cfg / ccfg
        page.fill("#prompt", "a photo of a dress")
        page.focus("#budget")
        page.keyboard.press("Home")                       # the lowest budget
        page.click("#generate")
        page.wait_for_function(image_shown)
        meta = page.text_content("#meta")
        assert f"budget {svc.budgets[0]}," in meta and "8 text tokens" in meta and page.text_content("#error") == ""
        page.select_option("#guidance", "ccfg")
        assert page.is_visible("#negative")
        page.fill("#negative", "a grey bag")
        page.evaluate("document.querySelector('#image').hidden = true")
        page.click("#generate")
        page.wait_for_function(image_shown)
        assert "ccfg" in page.text_content("#meta") and page.text_content("#error") == ""
        page.fill("#prompt", "")                          # refused by the server, shown on the page
        page.click("#generate")
        page.wait_for_function("document.querySelector('#error').textContent.length > 0")
        assert page.text_content("#error") == "prompt: a prompt must not be empty: give the text the image should show"
        page.fill("#prompt", "an ankle boot")
        page.click("#compare")
        page.wait_for_function("document.querySelectorAll('#compare-row img').length === 8 && "
                               "[...document.querySelectorAll('#compare-row img')].every(i => i.complete && i.naturalWidth > 0)")
        assert page.text_content("#error") == ""
    browse(url, test)
