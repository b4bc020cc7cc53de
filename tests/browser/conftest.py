"""The browser stage: pages loaded in Debian's headless Chromium, driven by Selenium through
Debian's ChromeDriver (scripts/browser.sh installs both when missing). Every test here is marked
`browser`; CI runs them as their own stage."""

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"  # where the screenshots the docs show are written


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    subprocess.run(["bash", str(ROOT / "scripts/browser.sh")], check=True)
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    # No sandbox (CI runs as root); no background networking: the machine's network is closed,
    # and Chromium's own connections would be refused.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
