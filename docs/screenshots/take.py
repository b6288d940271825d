"""Take the README's dashboard screenshots from a real `regionguard demo` run (Debian's Chromium via Playwright).

Starts ``regionguard demo --scenario region-outage`` on a free port, logs in
with the one-time password it prints, and saves:

- ``dashboard-overview.png``: the overview during the outage (open incident banner, region drained);
- ``dashboard-incident.png``: that incident's page once it is over.

Run: ``.venv/bin/python docs/screenshots/take.py`` (needs the ``sim`` extra and /usr/bin/chromium).
Every wait has a deadline; the demo is stopped at the end whatever happens.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]


def start_demo() -> tuple[subprocess.Popen[str], str, str, str]:
    cmd = [str(ROOT / ".venv/bin/regionguard"), "demo", "--scenario", "region-outage", "--duration", "240", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"dashboard at (\S+)\s+\(login: (\S+) / (\S+)\)", line)
        if m:
            return proc, m.group(1).rstrip("/"), m.group(2), m.group(3)
    proc.terminate()
    raise SystemExit("the demo did not print its dashboard URL within 60 s")


def wait_for(page: Any, url: str, selector: str, seconds: float, absent: bool = False) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page.goto(url)
        page.wait_for_load_state("load")
        if (page.locator(selector).count() > 0) != absent:
            return
        time.sleep(2)
    raise SystemExit(f"{url}: {selector} {'still there' if absent else 'not there'} after {seconds:.0f} s")


def main() -> int:
    from playwright.sync_api import sync_playwright

    proc, base, user, password = start_demo()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(base + "/login")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_selector("article.card")
            wait_for(page, base + "/", "p.banner-incident", 90)
            time.sleep(12)  # let the worker drain the region from every target before the picture
            page.goto(base + "/")
            page.wait_for_load_state("load")
            page.screenshot(path=str(HERE / "dashboard-overview.png"))
            incident = page.locator("p.banner-incident").first.get_attribute("data-incident")
            wait_for(page, base + "/incidents?state=open", "tr[data-incident]", 150, absent=True)
            page.goto(f"{base}/incident/{incident}")
            page.wait_for_load_state("load")
            page.screenshot(path=str(HERE / "dashboard-incident.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"saved {HERE / 'dashboard-overview.png'} and {HERE / 'dashboard-incident.png'} (incident {incident})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
