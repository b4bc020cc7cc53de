// The live dashboard: one snapshot of the run, then the changes the server pushes as the run
// folder grows (server-sent events from /events); every view is drawn from `run`.
"use strict";

const COLOURS = ["#3367d6", "#d93025", "#188038", "#f29900", "#8430ce", "#12a4af", "#e52592",
  "#5f6368", "#a50e0e", "#1e8e3e"];
const run = { status: {}, records: {}, consensus: [] };
const charts = {};
let drawing = false;

function $(id) { return document.getElementById(id); }
function colour(i) { return COLOURS[i % COLOURS.length]; }
function fixed(v, digits = 4) { return v === null || v === undefined ? "—" : v.toFixed(digits); }
function last(list) { return list.length ? list[list.length - 1] : null; }
function cell(text, attrs = {}) {
  const td = document.createElement("td");
  td.textContent = text;
  for (const [k, v] of Object.entries(attrs)) td.setAttribute(k, v);
  return td;
}

function lineChart(id, yTitle) {
  return new Chart($(id), {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false, parsing: false, normalized: true, responsive: true,
      scales: { x: { type: "linear", title: { display: true, text: "round" } },
                y: { title: { display: true, text: yTitle } } },
      plugins: { legend: { position: "bottom" } },
      elements: { point: { radius: 2 } },
    },
  });
}

function setSeries(chart, series) {
  const rounds = run.status.rounds;  // the whole run's x axis from the start
  if (rounds) { chart.options.scales.x.min = 1; chart.options.scales.x.max = rounds; }
  chart.data.datasets = series.map((s, i) => ({
    label: s.label, data: s.points, borderColor: s.colour || colour(i),
    backgroundColor: s.colour || colour(i), borderWidth: 2,
  }));
  chart.update("none");
}

// peer IDs the records name, by node name (the server maps those it knew at the time)
function nameOf(key) { return (run.status.peers || {})[key] || key; }

// node -> round -> the mean score the other nodes gave it that round
function contributions() {
  const sums = {};
  for (const [evaluator, records] of Object.entries(run.records)) {
    for (const r of records) {
      for (const [key, score] of Object.entries(r.scores || {})) {
        const node = nameOf(key);
        if (node === evaluator) continue;
        const byRound = (sums[node] ||= {});
        const s = (byRound[r.round] ||= { total: 0, n: 0 });
        s.total += score; s.n += 1;
      }
    }
  }
  const out = {};
  for (const [node, byRound] of Object.entries(sums)) {
    out[node] = Object.entries(byRound).map(([round, s]) => ({ x: Number(round), y: s.total / s.n }))
      .sort((a, b) => a.x - b.x);
  }
  return out;
}

function drawHeader(st) {
  $("scenario").textContent = st.scenario ? `— ${st.scenario}` : "";
  const parts = [];
  if (st.seed !== null && st.seed !== undefined) {
    parts.push(st.multi_seed ? `seed ${st.seed} (${st.folder}; seeds: ${st.seeds.join(", ")})` : `seed ${st.seed}`);
  }
  if (st.backend) parts.push(`backend ${st.backend}`);
  if (st.chain) parts.push(`chain ${st.chain}`);
  if (st.nodes) parts.push(`${st.nodes.length} nodes`);
  parts.push(`run folder ${st.root}`);
  $("run-line").textContent = parts.join(" · ");
  let state, text;
  if (!st.folder) {
    state = "waiting"; text = `waiting for the run to start in ${st.root}`;
  } else if (st.complete) {
    state = "finished"; text = "run finished";
  } else if (st.finished) {
    state = "finished"; text = st.multi_seed ? `${st.folder} finished; the run goes on` : "rounds finished; writing the report";
  } else {
    state = "running";
    text = `running: round ${st.current_round} of ${st.rounds ?? "?"} done by every node`;
  }
  document.body.dataset.state = state;
  $("status").textContent = text;
}

function drawNodes(st, received) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  const privacy = Object.values(run.records).some((rs) => rs.some((r) => r.epsilon !== null));
  for (const el of document.querySelectorAll(".privacy")) el.hidden = !privacy;
  for (const node of st.nodes || []) {
    const records = run.records[node] || [];
    const latest = last(records);
    const tr = document.createElement("tr");
    tr.dataset.node = node;
    tr.append(cell(node));
    tr.append(cell(`${latest ? latest.round : 0}/${st.rounds ?? "?"}`, { "data-key": "round" }));
    const bar = document.createElement("td");
    bar.innerHTML = '<div class="bar"><div></div></div>';
    bar.querySelector(".bar > div").style.width = `${100 * (latest ? latest.round : 0) / (st.rounds || 1)}%`;
    tr.append(bar);
    tr.append(cell(fixed(latest && latest.accuracy), { "data-key": "accuracy" }));
    tr.append(cell(fixed(latest && latest.auc), { "data-key": "auc" }));
    const sent = records.reduce((a, r) => a + r.bytes_sent, 0);
    const got = records.reduce((a, r) => a + r.bytes_received, 0);
    tr.append(cell(String(sent), { "data-key": "bytes_sent" }));
    tr.append(cell(String(got), { "data-key": "bytes_received" }));
    tr.append(cell(fixed(last(received[node] || [])?.y ?? null), { "data-key": "contribution" }));
    const eps = cell(fixed(latest && latest.epsilon, 2), { "data-key": "epsilon" });
    eps.className = "privacy"; eps.hidden = !privacy;
    tr.append(eps);
    body.append(tr);
  }
}

function drawFaults(st) {
  const now = st.in_effect || [];
  $("in-effect").innerHTML = "";
  const label = document.createElement("span");
  if (st.finished) {
    label.textContent = "run over: no fault in effect";
  } else {
    label.textContent = `in effect at round ${st.current_round}: `;
    const what = document.createElement("span");
    what.className = now.length ? "effect" : "";
    what.id = "in-effect-list";
    what.textContent = now.length ? now.join(", ") : "none";
    label.append(what);
  }
  $("in-effect").append(label);
  const rounds = st.rounds || 1;
  const box = $("windows");
  box.replaceChildren();
  for (const w of st.fault_windows || []) {
    const row = document.createElement("div");
    row.className = "row";
    row.innerHTML = `<span class="label"></span><div class="track"><div class="span"></div><div class="cursor"></div></div>`;
    row.querySelector(".label").textContent = `${w.label} (rounds ${w.from}–${w.to})`;
    const span = row.querySelector(".span");
    span.style.left = `${100 * (w.from - 1) / rounds}%`;
    span.style.width = `${100 * (w.to - w.from + 1) / rounds}%`;
    if (now.includes(w.label)) span.classList.add("now");
    row.querySelector(".cursor").style.left = `${100 * Math.min(st.current_round, rounds) / rounds}%`;
    box.append(row);
  }
  const planned = $("planned");
  planned.replaceChildren();
  const items = [...(st.faults || []), ...(st.attacks || [])];
  for (const text of items.length ? items : ["no faults or attacks planned"]) {
    const li = document.createElement("li");
    li.textContent = text;
    planned.append(li);
  }
}

function drawFinal(st) {
  const summary = st.summary;
  $("final").hidden = !summary;
  if (!summary) return;
  const body = $("final-table").querySelector("tbody");
  body.replaceChildren();
  const value = (node, key, v, digits) => cell(fixed(v, digits), { "data-node": node, "data-key": key, "data-value": v === null || v === undefined ? "" : String(v) });
  for (const [node, v] of Object.entries(summary.nodes)) {
    const tr = document.createElement("tr");
    tr.append(cell(v.honest === false ? `${node} (attacker)` : node));
    tr.append(value(node, "accuracy", v.accuracy, 4));
    tr.append(value(node, "auc", v.auc, 4));
    tr.append(cell(String(v.bytes_sent), { "data-node": node, "data-key": "bytes_sent", "data-value": String(v.bytes_sent) }));
    tr.append(value(node, "contribution", v.contribution, 4));
    tr.append(value(node, "reward_eth", v.reward_eth, 4));
    tr.append(value(node, "epsilon", v.epsilon, 2));
    body.append(tr);
  }
  const mean = document.createElement("tr");
  mean.className = "mean";
  mean.append(cell("mean (honest nodes)"));
  mean.append(value("mean", "accuracy", summary.mean.accuracy, 4));
  mean.append(value("mean", "auc", summary.mean.auc, 4));
  for (let i = 0; i < 4; i++) mean.append(cell(""));
  body.append(mean);
  const audit = summary.audit_ok === null || summary.audit_ok === undefined ? "" :
    ` · ledger audit ${summary.audit_ok ? "passed" : "FAILED"}`;
  $("final-line").textContent = `${fixed(summary.wall_seconds, 1)} s of rounds${audit}`;
}

function drawReport(st) {
  $("report").hidden = !st.report;
  if (!st.report) return;
  const src = `/report/${st.report}?scope=${st.report_scope}`;
  if ($("report-frame").dataset.src !== src) {
    $("report-frame").dataset.src = src;
    $("report-frame").src = src;
    $("report-link").href = src;
  }
}

function draw() {
  drawing = false;
  const st = run.status;
  const nodes = st.nodes || [];
  const received = contributions();
  drawHeader(st);
  drawNodes(st, received);
  drawFaults(st);
  setSeries(charts.accuracy, nodes.map((n) => ({ label: n, points: (run.records[n] || []).filter((r) => r.accuracy !== null).map((r) => ({ x: r.round, y: r.accuracy })) })));
  setSeries(charts.consensus, [{ label: "mean distance to the average model", points: run.consensus.map((p) => ({ x: p.round, y: p.distance })), colour: "#5f6368" }]);
  setSeries(charts.bytes, nodes.map((n) => {
    let total = 0;
    return { label: n, points: (run.records[n] || []).map((r) => ({ x: r.round, y: (total += r.bytes_sent) })) };
  }));
  setSeries(charts.contribution, nodes.map((n) => ({ label: n, points: received[n] || [] })));
  setSeries(charts.epsilon, nodes.map((n) => ({ label: n, points: (run.records[n] || []).filter((r) => r.epsilon !== null).map((r) => ({ x: r.round, y: r.epsilon })) })));
  drawFinal(st);
  drawReport(st);
  document.body.dataset.records = String(Object.values(run.records).reduce((a, rs) => a + rs.length, 0));
  document.body.dataset.consensus = String(run.consensus.length);
}

function redraw() {
  if (!drawing) { drawing = true; requestAnimationFrame(draw); }
}

const handlers = {
  snapshot(data) { run.status = data.status; run.records = data.records; run.consensus = data.consensus; },
  status(data) { run.status = data; },
  records(data) {
    for (const [node, change] of Object.entries(data)) {
      run.records[node] = (change.replace ? [] : run.records[node] || []).concat(change.records);
    }
  },
  consensus(data) { run.consensus = (data.replace ? [] : run.consensus).concat(data.points); },
};

function connect() {
  const source = new EventSource("/events");
  for (const [kind, apply] of Object.entries(handlers)) {
    source.addEventListener(kind, (e) => { apply(JSON.parse(e.data)); redraw(); });
  }
  source.onerror = () => {
    if (!run.status.complete) {
      document.body.dataset.state = "lost";
      $("status").textContent = "connection to the dashboard lost; retrying…";
    }
  };
}

charts.accuracy = lineChart("chart-accuracy", "accuracy");
charts.consensus = lineChart("chart-consensus", "distance");
charts.bytes = lineChart("chart-bytes", "bytes");
charts.contribution = lineChart("chart-contribution", "score");
charts.epsilon = lineChart("chart-epsilon", "ε");
connect();
