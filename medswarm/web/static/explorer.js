// The ledger explorer's page: draws /api/explorer.json (the audit's audit.json and tables),
// polls /api/head and draws again when the chain moved. Read-only: every request is a GET.
"use strict";

const POLL_MS = 3000;
const WEI_PER_ETH = 10n ** 18n;
const SCORE_UNIT = 1000000n; // scores are fixed point, score * 1e6
let shownBlock = null;
let data = null;
let chart = null;
let loading = false;

// Wei figures pass 2**53: parse integers that a double cannot hold as BigInt, from their source
// text (JSON.parse source text access), so the page shows exactly what the audit says.
function parseExact(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value === "number" && !Number.isSafeInteger(value) && context
        && /^-?\d+$/.test(context.source)) {
      return BigInt(context.source);
    }
    return value;
  });
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  const body = parseExact(await response.text());
  if (!response.ok) throw new Error(body.error || `${url}: HTTP ${response.status}`);
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ----- formats ---------------------------------------------------------------------------

function eth(wei) {
  let w = BigInt(wei);
  const sign = w < 0n ? "-" : "";
  if (w < 0n) w = -w;
  const fraction = (w % WEI_PER_ETH).toString().padStart(18, "0").replace(/0+$/, "");
  return `${sign}${w / WEI_PER_ETH}${fraction ? "." + fraction : ""} ETH`;
}

function weiCell(wei) {
  return el("span", {class: "wei", "data-wei": String(wei), title: `${wei} wei`}, eth(wei));
}

function score(fixed) {
  if (fixed === null || fixed === undefined) return "not scored";
  let f = BigInt(fixed);
  const sign = f < 0n ? "-" : "";
  if (f < 0n) f = -f;
  return `${sign}${f / SCORE_UNIT}.${(f % SCORE_UNIT).toString().padStart(6, "0")}`;
}

function short(hex) {
  return hex && hex.length > 14 ? `${hex.slice(0, 10)}…${hex.slice(-4)}` : hex || "";
}

function hexCell(hex) {
  return hex ? el("code", {title: hex}, short(hex)) : "-";
}

function txLink(block, tx, compact) {
  if (!tx) return "-";
  return el("a", {class: "tx", href: `/api/tx/${tx}`, "data-tx": tx, "data-block": block,
                  title: `block ${block}, transaction ${tx}`, onclick: showTx},
            compact ? `block ${block}` : `block ${block} · ${short(tx)}`);
}

function nameOf(address) {
  const m = data && data.audit.members.find((x) => x.address === address);
  return m ? m.name : address;
}

function memberCell(address) {
  return el("span", {title: address, "data-address": address}, nameOf(address));
}

// ----- tables ----------------------------------------------------------------------------

function downloads(name) {
  return el("span", {class: "downloads"}, "download ",
            el("a", {href: `/api/${name}.csv`, download: `${name}.csv`}, "CSV"), " · ",
            el("a", {href: `/api/${name}.json`, download: `${name}.json`}, "JSON"));
}

// columns: [label, key (the data-col), cell(row)]
function table(name, title, columns, rows, rowAttrs) {
  const head = el("tr", {}, columns.map(([label, key]) => el("th", {"data-col": key}, label)));
  const body = rows.map((row) => el("tr", rowAttrs ? rowAttrs(row) : {},
    columns.map(([, key, cell]) => el("td", {"data-col": key}, cell(row)))));
  const empty = rows.length ? null : el("p", {class: "note"}, "none");
  return el("div", {class: "table-box", id: `${name}-box`},
            el("div", {class: "table-title"}, el("strong", {}, title), " ", downloads(name)),
            el("table", {id: `${name}-table`}, el("thead", {}, head), el("tbody", {}, body)),
            empty);
}

function put(name, node) {
  document.getElementById(`${name}-wrap`).replaceChildren(node);
}

function ownerLedger(member) {
  const lines = [];
  for (const s of data.tables.scores) {
    if (s.member === member.address && BigInt(s.reward) > 0n) {
      lines.push(el("li", {}, `epoch ${s.epoch} reward +`, weiCell(s.reward), " ",
                    txLink(s.block, s.tx_hash)));
    }
  }
  for (const w of data.tables.withdrawals) {
    if (w.member === member.address) {
      lines.push(el("li", {}, "withdrew -", weiCell(w.amount), " ", txLink(w.block, w.tx_hash)));
    }
  }
  lines.push(el("li", {class: "sum"}, "owed = ", weiCell(member.owed)));
  return el("ul", {class: "owed-ledger"}, lines);
}

function toggleOwed(event) {
  const row = event.currentTarget.closest("tr");
  const next = row.nextElementSibling;
  if (next && next.classList.contains("detail")) {
    next.remove();
    return;
  }
  const member = data.audit.members.find((m) => m.address === row.dataset.member);
  const cells = row.children.length;
  row.after(el("tr", {class: "detail", "data-detail": member.address},
                el("td", {colspan: cells}, ownerLedger(member))));
}

function drawMembers() {
  const activeCell = (m) => m.active ? "yes"
    : el("span", {}, "no, since ", txLink(m.deactivated_block, m.deactivated_tx, true));
  put("members", table("members", "Members", [
    ["#", "index", (m) => m.index],
    ["name", "name", (m) => m.name],
    ["peer ID", "peer_id", (m) => el("code", {}, m.peer_id)],
    ["address", "address", (m) => hexCell(m.address)],
    ["active", "active", activeCell],
    ["owed", "owed", (m) => el("button", {type: "button", class: "owed", onclick: toggleOwed,
                                           title: "each reward and withdrawal"}, weiCell(m.owed))],
    ["withdrawn", "paid", (m) => weiCell(m.paid)],
    ["commitments", "commitments", (m) => m.commitments],
    ["reports", "reports", (m) => m.reports],
    ["registered", "registered_tx", (m) => txLink(m.registered_block, m.registered_tx)],
  ], data.audit.members, (m) => ({"data-member": m.address})));
}

function drawEpochs() {
  put("epochs", table("epochs", "Finalized and closed epochs", [
    ["epoch", "epoch", (e) => e.epoch],
    ["status", "status", (e) => e.status],
    ["reward", "reward", (e) => weiCell(e.reward)],
    ["allocated", "allocated", (e) => weiCell(e.allocated)],
    ["results hash", "results_hash", (e) => hexCell(e.results_hash)],
    ["by", "by", (e) => memberCell(e.by)],
    ["event", "tx_hash", (e) => txLink(e.block, e.tx_hash)],
  ], data.audit.epochs, (e) => ({"data-epoch": e.epoch})));
  put("epoch_members", table("epoch_members", "Epochs by member", [
    ["epoch", "epoch", (r) => r.epoch],
    ["status", "status", (r) => r.status],
    ["member", "member", (r) => memberCell(r.member)],
    ["commitments", "commitments", (r) => r.commitments],
    ["combined score", "score", (r) => score(r.score)],
    ["reports", "reports", (r) => r.reports],
    ["reward", "reward", (r) => weiCell(r.reward)],
    ["event", "tx_hash", (r) => txLink(r.block, r.tx_hash)],
  ], data.audit.epoch_members, (r) => ({"data-epoch": r.epoch, "data-member": r.member})));
  drawChart();
}

function drawChart() {
  if (typeof Chart === "undefined") return; // chart.js missing (`npm install`): tables only
  const epochs = [...new Set(data.audit.scores.map((s) => s.epoch))].sort((a, b) => a - b);
  const datasets = data.audit.members.map((m) => ({
    label: m.name,
    data: epochs.map((e) => {
      const s = data.audit.scores.find((x) => x.epoch === e && x.member === m.address);
      return s ? Number(s.score) / 1e6 : null;
    }),
    spanGaps: true,
  }));
  if (chart) chart.destroy();
  chart = new Chart(document.getElementById("scores-chart"), {
    type: "line",
    data: {labels: epochs.map((e) => `epoch ${e}`), datasets},
    options: {animation: false, maintainAspectRatio: false,
              plugins: {title: {display: true, text: "combined score per epoch"}}},
  });
}

function drawRest() {
  put("scores", table("scores", "Combined scores and rewards", [
    ["epoch", "epoch", (s) => s.epoch],
    ["member", "member", (s) => memberCell(s.member)],
    ["combined score", "score", (s) => score(s.score)],
    ["reports", "reports", (s) => s.reports],
    ["reward", "reward", (s) => weiCell(s.reward)],
    ["event", "tx_hash", (s) => txLink(s.block, s.tx_hash)],
  ], data.audit.scores, (s) => ({"data-epoch": s.epoch, "data-member": s.member})));
  drawCommitments();
  put("withdrawals", table("withdrawals", "Withdrawals", [
    ["member", "member", (w) => memberCell(w.member)],
    ["amount", "amount", (w) => weiCell(w.amount)],
    ["event", "tx_hash", (w) => txLink(w.block, w.tx_hash)],
  ], data.audit.withdrawals));
  put("fundings", table("fundings", "Funding of the pool", [
    ["from", "source", (f) => memberCell(f.source)],
    ["amount", "amount", (f) => weiCell(f.amount)],
    ["event", "tx_hash", (f) => txLink(f.block, f.tx_hash)],
  ], data.audit.fundings));
  put("privacy", table("privacy", "Privacy spends (cumulative epsilon per report)", [
    ["member", "member", (p) => memberCell(p.member)],
    ["epoch", "epoch", (p) => p.epoch],
    ["epsilon", "epsilon", (p) => p.epsilon === "inf" ? "no DP" : p.epsilon],
    ["delta", "delta", (p) => p.delta],
    ["event", "tx_hash", (p) => txLink(p.block, p.tx_hash)],
  ], data.tables.privacy));
  put("evaluations", table("evaluations", "Cross-site evaluation digests", [
    ["member", "member", (v) => memberCell(v.member)],
    ["digest", "digest", (v) => hexCell(v.digest)],
    ["event", "tx_hash", (v) => txLink(v.block, v.tx_hash)],
  ], data.audit.evaluations));
}

function drawCommitments() {
  const words = document.getElementById("commitments-filter").value.trim().toLowerCase();
  const rows = data.tables.commitments.filter((c) => !words
    || `${c.round} ${nameOf(c.member)} ${c.member} ${c.digest}`.toLowerCase().includes(words));
  put("commitments", table("commitments", `Model commitments (${rows.length})`, [
    ["round", "round", (c) => c.round],
    ["member", "member", (c) => memberCell(c.member)],
    ["digest", "digest", (c) => hexCell(c.digest)],
    ["samples", "samples", (c) => c.samples],
    ["event", "tx_hash", (c) => txLink(c.block, c.tx_hash)],
  ], rows, (c) => ({"data-round": c.round, "data-member": c.member})));
}

function drawVerdict() {
  const a = data.audit;
  const box = document.getElementById("verdict");
  box.className = `verdict ${a.ok ? "ok" : "failed"}`;
  box.replaceChildren(a.ok
    ? `Audit passed: the events, the rules and the contract's views agree (${a.events} events replayed up to block ${a.to_block}).`
    : `Audit FAILED: ${a.findings.length} mismatch${a.findings.length === 1 ? "" : "es"} (${a.events} events replayed up to block ${a.to_block}).`);
  if (!a.findings.length) {
    document.getElementById("findings-wrap").replaceChildren(el("div", {class: "table-title"},
      el("strong", {}, "Mismatches"), " none ", downloads("findings")));
    return;
  }
  document.getElementById("findings-wrap").replaceChildren(table("findings", "Mismatches", [
    ["check", "check", (f) => f.check],
    ["subject", "subject", (f) => f.subject],
    ["expected (events, rules, files)", "expected", (f) => f.expected],
    ["actual (contract)", "actual", (f) => f.actual],
  ], a.findings));
}

function drawTotals() {
  const a = data.audit;
  const tiles = [
    ["funded", "funded", weiCell(a.funded)],
    ["owed", "owed", weiCell(a.owed)],
    ["withdrawn", "paid", weiCell(a.paid)],
    ["pool", "pool", weiCell(a.pool)],
    ["balance", "balance", weiCell(a.balance)],
    ["epochs finalized", "epochs_finalized", a.epochs_finalized],
    ["commitments", "commitments", a.commitments],
    ["events replayed", "events", a.events],
    ["model files checked", "models_checked", a.models_checked],
    ["max epsilon", "max_epsilon", a.max_epsilon ? score(a.max_epsilon).replace(/\.?0+$/, "") : "none"],
  ];
  document.getElementById("totals").replaceChildren(...tiles.map(([label, key, value]) =>
    el("div", {class: "tile", "data-col": key}, el("div", {class: "label"}, label),
       el("div", {class: "value"}, value))));
}

function draw() {
  const a = data.audit;
  document.getElementById("where").replaceChildren(
    "contract ", el("code", {}, a.contract), ` on ${a.chain}, audited up to block `,
    el("strong", {id: "audited-block"}, a.to_block));
  drawVerdict();
  drawTotals();
  drawMembers();
  drawEpochs();
  drawRest();
  document.body.dataset.block = String(data.block);
}

// ----- live ------------------------------------------------------------------------------

function live(text, bad) {
  const node = document.getElementById("live");
  node.textContent = text;
  node.classList.toggle("error", Boolean(bad));
}

async function load() {
  if (loading) return;
  loading = true;
  try {
    data = await getJSON("/api/explorer.json");
    shownBlock = data.block;
    draw();
    live(`watching the chain: block ${shownBlock} (checked ${new Date().toLocaleTimeString()})`);
  } catch (error) {
    live(`cannot audit: ${error.message}`, true);
  } finally {
    loading = false;
  }
}

async function poll() {
  try {
    const head = await getJSON("/api/head");
    if (head.block !== shownBlock) await load();
    else live(`watching the chain: block ${shownBlock} (checked ${new Date().toLocaleTimeString()})`);
  } catch (error) {
    live(`chain unreachable: ${error.message} (showing block ${shownBlock})`, true);
  }
}

async function showTx(event) {
  event.preventDefault();
  const tx = event.currentTarget.dataset.tx;
  const panel = document.getElementById("tx-panel");
  const body = document.getElementById("tx-body");
  panel.hidden = false;
  body.replaceChildren(el("p", {}, `loading ${tx}...`));
  try {
    const t = await getJSON(`/api/tx/${tx}`);
    body.replaceChildren(
      el("p", {}, el("code", {id: "tx-hash"}, t.tx_hash)),
      el("p", {}, `block `, el("strong", {id: "tx-block"}, t.block), `, from `,
         memberCell(t.from), t.status === 1 ? "" : " (failed)"),
      el("ol", {id: "tx-events"}, t.events.map((e) => el("li", {"data-event": e.name},
        el("strong", {}, e.name), " ",
        Object.entries(e.args).map(([k, v]) => el("span", {class: "arg", "data-arg": k},
          `${k}=${typeof v === "string" && /^0x[0-9a-fA-F]{40}$/.test(v) ? nameOf(v) : v} `))))));
  } catch (error) {
    body.replaceChildren(el("p", {class: "error"}, error.message));
  }
}

document.getElementById("tx-close").addEventListener("click", () => {
  document.getElementById("tx-panel").hidden = true;
});
document.getElementById("commitments-filter").addEventListener("input", () => {
  if (data) drawCommitments();
});
load();
setInterval(poll, POLL_MS);
