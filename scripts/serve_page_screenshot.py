"""The screenshot in docs/serving.md: `elit serve` on a trained model, its page driven by Playwright in
Debian's chromium (compare budgets for one class and seed, then generate at budget 5).

    python scripts/serve_page_screenshot.py --model runs/main-job/model --out docs/images/serve-page.png
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
from playwright.sync_api import sync_playwright


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/main-job/model")
    ap.add_argument("--out", default="docs/images/serve-page.png")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "elit", "serve", "--model", args.model, "--port", str(port),
                               "--steps", str(args.steps), "--threads", "1"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 700})
            page.goto(url + "/")
            page.wait_for_function("document.querySelectorAll('#class option').length > 0")
            page.select_option("#class", "7")
            page.fill("#seed", "3")
            page.click("#compare")
            page.wait_for_function("document.querySelectorAll('#compare-row img').length === "
                                   "Math.min(8, Number(document.querySelector('#budget').max) + 1) && "
                                   "[...document.querySelectorAll('#compare-row img')].every(i => i.complete && i.naturalWidth > 0)",
                                   timeout=300_000)
            page.focus("#budget")
            for _ in range(11):          # from the full budget (16) down to 5
                page.keyboard.press("ArrowLeft")
            page.click("#generate")
            page.wait_for_function("!document.querySelector('#image').hidden && "
                                   "document.querySelector('#image').naturalWidth > 0", timeout=120_000)
            time.sleep(1.5)              # one status poll
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
