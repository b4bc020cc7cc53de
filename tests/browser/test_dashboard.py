"""The live dashboard in a browser, beside a real run: `medswarm sim run --dashboard PORT` on four
heart-disease hospitals with their chain, a slow node (so that rounds take long enough to be
watched) and a partition. The page is seen updating mid-run, then finished with summary.json's
numbers; its two screenshots are the ones docs/dashboard.md shows."""

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from medswarm.web.serve import port_in_use
from tests.browser.conftest import DOCS, ROOT, free_port

DATA = ROOT / "data" / "heart-disease"
ROUNDS = 24
SCENARIO = f"""
name = "dashboard-demo"
seeds = [0]
backend = "process"
rounds = {ROUNDS}

[data]
schema = "{DATA / "schema.toml"}"
validation_fraction = 0.25

[data.sites]
cleveland = "{DATA / "processed.cleveland.data"}"
hungarian = "{DATA / "processed.hungarian.data"}"
switzerland = "{DATA / "processed.switzerland.data"}"
va = "{DATA / "processed.va.data"}"

[topology]
kind = "full"

[model]
name = "mlp"
hidden = [16]

[training]
epochs = 1
lr = 0.05
optimizer = "sgd"

[chain]
backend = "anvil"
rounds_per_epoch = 6
reward_per_epoch_eth = 1.0
pool_eth = 10.0

[evaluation]
cross_site = false

[baselines]
local_only = false
centralized = false
fedavg = false

[[faults]]
kind = "slow"
node = "va"
delay_seconds = 0.6

[[faults]]
kind = "partition"
groups = [["cleveland", "hungarian"], ["switzerland", "va"]]
from = 8
to = 12
"""
# Bounds on waiting, so that a broken run fails the test instead of hanging it (not timings).
START = 120.0
RUN = 400.0


def wait(
    driver: webdriver.Chrome, what: str, until: Callable[[webdriver.Chrome], object], bound: float
) -> object:
    return WebDriverWait(driver, bound, poll_frequency=0.2).until(until, message=what)


def body(driver: webdriver.Chrome, name: str) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").get_attribute(f"data-{name}"))


def shown(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path]]:
    scenario = tmp_path / "dashboard.toml"
    scenario.write_text(SCENARIO)
    out, port, log = tmp_path / "run", free_port(), tmp_path / "sim.log"
    command = [sys.executable, "-m", "medswarm", "sim", "run", str(scenario), "--out", str(out)]
    with open(log, "wb") as f:
        process = subprocess.Popen(
            [*command, "--dashboard", str(port)], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
        )
    yield process, port, out, log
    if process.poll() is None:  # the test failed before stopping it
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_dashboard_follows_a_run_and_ends_with_its_summary(
    browser: webdriver.Chrome, run: tuple[subprocess.Popen[bytes], int, Path, Path]
) -> None:
    process, port, out, log = run

    def started(_: object) -> bool:
        assert process.poll() is None, log.read_text()
        return f"dashboard: http://127.0.0.1:{port}/" in log.read_text()

    WebDriverWait(browser, START, poll_frequency=0.2).until(started, "the dashboard's URL")
    browser.set_window_size(1400, 1000)
    browser.get(f"http://127.0.0.1:{port}/")
    wait(browser, "the first rounds", lambda d: int(body(d, "records")) > 0, START)
    assert body(browser, "state") == "running"
    seen = int(body(browser, "records"))
    # Live: more records arrive without the page being loaded again.
    wait(browser, "a live update", lambda d: int(body(d, "records")) > seen, RUN)
    # The partition (rounds 8-12) shown as in effect while it is.
    wait(
        browser,
        "the partition in effect",
        lambda d: "partition" in shown(d, "in-effect") and body(d, "state") == "running",
        RUN,
    )
    rounds_now = min(int(r.text.split("/")[0]) for r in browser.find_elements(
        By.CSS_SELECTOR, "#nodes td[data-key=round]"
    ))  # fmt: skip
    assert rounds_now < ROUNDS
    assert int(body(browser, "consensus")) >= 1
    browser.save_screenshot(str(DOCS / "dashboard-running.png"))

    wait(browser, "the end of the run", lambda d: body(d, "state") == "finished", RUN)
    wait(browser, "the whole run", lambda d: shown(d, "status") == "run finished", RUN)
    summary = json.loads((out / "summary.json").read_text())
    for node, numbers in summary["nodes"].items():
        for key in ("accuracy", "auc", "contribution", "reward_eth"):
            cell = browser.find_element(
                By.CSS_SELECTOR, f'#final-table td[data-node="{node}"][data-key="{key}"]'
            )
            assert float(str(cell.get_attribute("data-value"))) == numbers[key], (node, key)
            assert abs(float(cell.text) - numbers[key]) <= 5e-5, (node, key, cell.text)
        sent = browser.find_element(
            By.CSS_SELECTOR, f'#final-table td[data-node="{node}"][data-key="bytes_sent"]'
        )
        assert int(sent.text) == numbers["bytes_sent"]
    for key in ("accuracy", "auc"):
        cell = browser.find_element(
            By.CSS_SELECTOR, f'#final-table td[data-node="mean"][data-key="{key}"]'
        )
        assert float(str(cell.get_attribute("data-value"))) == summary["mean"][key]
    rounds = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#nodes td[data-key=round]")]
    assert rounds == [f"{ROUNDS}/{ROUNDS}"] * 4
    consensus = json.loads((out / "consensus.json").read_text())
    assert int(body(browser, "consensus")) == len(consensus)
    frame = browser.find_element(By.ID, "report-frame")
    assert frame.get_attribute("src").endswith("/report/report.html?scope=run")
    browser.set_window_size(1400, 2300)
    browser.save_screenshot(str(DOCS / "dashboard-finished.png"))

    def kept_up(_: object) -> bool:
        assert process.poll() is None, log.read_text()
        return "run finished; dashboard at" in log.read_text()

    WebDriverWait(browser, RUN, poll_frequency=0.2).until(kept_up, "the run's end")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()
    said = log.read_text()
    assert "dashboard stopped" in said and "Traceback" not in said, said
    assert not port_in_use(port)
