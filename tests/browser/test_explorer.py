"""The ledger explorer in Chromium: the figures the page shows are the audit's (`medswarm ledger
audit` on the same chain), a figure leads to its event, a failed audit shows its mismatches,
and the page's screenshot for docs/ledger.md is written here (docs/explorer.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from typer.testing import CliRunner

from ledger.accounts import dev_account
from medswarm.cli.ledger import app
from tests.browser.conftest import DOCS, free_port
from tests.explorer_support import HOSPITALS, build_history, eth, explorer, score

SCREENSHOT = DOCS / "explorer.png"


def _audit(state: Path, contract: str, out: Path, *more: str) -> dict[str, Any]:
    args = ["audit", "--chain", "anvil", "--state", str(state), "--contract", contract]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *more])
    assert result.exit_code in (0, 1), result.output
    return dict(json.loads((out / "audit.json").read_text()))


def _load(browser: webdriver.Chrome, url: str, block: int) -> None:
    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.block") == str(block)
    )


def _cell(row: WebElement, col: str) -> str:
    return row.find_element(By.CSS_SELECTOR, f'td[data-col="{col}"]').text


def _row(browser: webdriver.Chrome, table: str, **keys: object) -> WebElement:
    where = "".join(f'[data-{k}="{v}"]' for k, v in keys.items())
    return browser.find_element(By.CSS_SELECTOR, f"#{table}-table tbody tr{where}")


def test_the_explorer_page_shows_the_audits_figures(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    state = tmp_path / "anvil-state.json"
    contract = build_history(state)
    audited = _audit(state, contract, tmp_path / "audit")
    assert audited["ok"] and [m["name"] for m in audited["members"]] == HOSPITALS
    with explorer("--state", str(state), "--contract", contract, port=free_port()) as url:
        _load(browser, url, audited["to_block"])
        verdict = browser.find_element(By.ID, "verdict").text
        assert verdict.startswith("Audit passed"), verdict
        assert f"up to block {audited['to_block']}" in verdict
        for m in audited["members"]:
            row = _row(browser, "members", member=m["address"])
            assert _cell(row, "name") == m["name"]
            assert _cell(row, "owed") == eth(m["owed"])
            assert _cell(row, "paid") == eth(m["paid"])
            link = row.find_element(By.CSS_SELECTOR, 'td[data-col="registered_tx"] a.tx')
            assert link.get_attribute("data-tx") == m["registered_tx"]
            assert f"block {m['registered_block']}" in link.text
        assert len(audited["scores"]) == 8
        for s in audited["scores"]:
            row = _row(browser, "scores", epoch=s["epoch"], member=s["member"])
            assert _cell(row, "score") == score(s["score"])
            assert _cell(row, "reward") == eth(s["reward"])
            assert (
                row.find_element(By.CSS_SELECTOR, "a.tx").get_attribute("data-tx") == s["tx_hash"]
            )
        for r in audited["epoch_members"]:
            row = _row(browser, "epoch_members", epoch=r["epoch"], member=r["member"])
            shown = (_cell(row, "commitments"), _cell(row, "score"), _cell(row, "reward"))
            expected = (str(r["commitments"]), score(r["score"]) if r["score"] is not None
                        else "not scored", eth(r["reward"]))  # fmt: skip
            assert shown == expected

        # Cleveland withdrew: its owed figure opens onto each reward and the withdrawal
        cleveland = audited["members"][1]
        assert cleveland["paid"] > 0 and cleveland["owed"] == 0
        _row(browser, "members", member=cleveland["address"]).find_element(
            By.CSS_SELECTOR, "button.owed"
        ).click()
        detail = browser.find_element(By.CSS_SELECTOR, f'tr[data-detail="{cleveland["address"]}"]')
        links = [a.get_attribute("data-tx") for a in detail.find_elements(By.CSS_SELECTOR, "a.tx")]
        rewards = [s for s in audited["scores"] if s["member"] == cleveland["address"]]
        withdrawal = audited["withdrawals"][0]
        assert links == [s["tx_hash"] for s in rewards] + [withdrawal["tx_hash"]]
        # following a reward's transaction shows the event that set the figure
        detail.find_element(By.CSS_SELECTOR, "a.tx").click()
        accrual = '#tx-events li[data-event="RewardAccrued"]'
        WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, accrual))
        assert browser.find_element(By.ID, "tx-hash").text == rewards[0]["tx_hash"]
        assert browser.find_element(By.ID, "tx-block").text == str(rewards[0]["block"])
        accrued = [
            li.text
            for li in browser.find_elements(
                By.CSS_SELECTOR, '#tx-events li[data-event="RewardAccrued"]'
            )
        ]
        assert f"member=Cleveland amount={rewards[0]['reward']}" in " ".join(accrued)
        browser.find_element(By.ID, "tx-close").click()
        browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_failed_audit_shows_its_mismatches(browser: webdriver.Chrome, tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    contract = build_history(state)
    models = tmp_path / "models" / dev_account(2).address
    models.mkdir(parents=True)
    (models / "round-1.safetensors").write_bytes(b"not what was committed")
    audited = _audit(state, contract, tmp_path / "audit", "--models", str(models.parent))
    [finding] = audited["findings"]
    args = ["--state", str(state), "--contract", contract, "--models", str(models.parent)]
    with explorer(*args, port=free_port()) as url:
        _load(browser, url, audited["to_block"])
        assert browser.find_element(By.ID, "verdict").text.startswith("Audit FAILED: 1 mismatch")
        row = browser.find_element(By.CSS_SELECTOR, "#findings-table tbody tr")
        assert [_cell(row, c) for c in ("check", "subject", "expected", "actual")] == [
            finding["check"], finding["subject"], finding["expected"], finding["actual"],
        ]  # fmt: skip
