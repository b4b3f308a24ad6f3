// The dashboard page: one View document from /api/events (server-sent events), drawn whole on
// each message. No framework, no build step, no network beyond this server. Text from the bus is
// only ever set as textContent, never parsed as HTML.
"use strict";

const DIRECTIONS = ["long", "short", "exit", "hold"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function fill(parent, children) {
  parent.replaceChildren(...children);
}

function clock(ms, mode) {
  if (mode === "simulation") {
    const minutes = Math.floor(ms / 60000);
    return `${String(Math.floor(minutes / 60)).padStart(2, "0")}:${String(minutes % 60).padStart(2, "0")}`;
  }
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function colours(names) {
  const map = {};
  // Hues a golden angle apart: neighbours differ, and no colour repeats however many agents.
  names.forEach((name, i) => { map[name] = `hsl(${(i * 137.508) % 360}, 75%, 62%)`; });
  return map;
}

function level(fraction) {
  return fraction >= 0.9 ? "warning" : fraction >= 0.6 ? "watch" : "ok";
}

function bar(used, limit, label) {
  const fraction = limit > 0 ? Math.min(used / limit, 1) : 0;
  const node = el("span", { class: "bar", "data-level": level(fraction), title: label },
    el("i", { style: `width:${(fraction * 100).toFixed(1)}%` }), el("span", {}, label));
  return node;
}

function signed(text) {
  const value = Number(text);
  return el("span", { class: value > 0 ? "pos" : value < 0 ? "neg" : "" }, text);
}

function drawHeader(view) {
  document.getElementById("title").textContent = view.title;
  const badge = document.getElementById("connection");
  const state = view.mode === "simulation" ? "simulation" : view.connected ? "live" : "lost";
  badge.dataset.state = state;
  badge.textContent = state === "live" ? "live" : state === "simulation" ? "simulation results"
    : "exchange unreachable";
  fill(document.getElementById("summary"), Object.entries(view.summary).map(([key, value]) =>
    el("div", {}, el("dt", {}, key), el("dd", {}, value))));
}

function drawAgents(view) {
  const rows = view.agents.map((a) => {
    const lim = a.limits;
    const limitCells = lim ? [
      el("td", {}, bar(Number(lim.burst_used), Number(lim.burst), `${lim.burst_used} / ${lim.burst}`)),
      el("td", {}, bar(Number(lim.hourly_used), Number(lim.hourly), `${lim.hourly_used} / ${lim.hourly}`)),
      el("td", {}, bar(Number(lim.daily_used), Number(lim.daily), `${lim.daily_used} / ${lim.daily}`)),
    ] : [el("td", {}, "—"), el("td", {}, "—"), el("td", {}, "—")];
    const refusals = Object.entries(a.refusals).map(([code, n]) => el("span", { class: "chip" }, `${code} ${n}`));
    return el("tr", { "data-agent": a.agent },
      el("td", {}, a.agent), el("td", {}, a.role), el("td", { class: "num" }, a.balance),
      el("td", { class: "num pos" }, a.earned), el("td", { class: "num neg" }, a.spent),
      el("td", { class: "num" }, a.held), ...limitCells, el("td", {}, ...refusals));
  });
  fill(document.querySelector("#agents tbody"), rows.length ? rows
    : [el("tr", {}, el("td", { colspan: 10, class: "empty" }, "no agent registered yet"))]);
}

function drawChart(view, palette) {
  const names = Object.keys(view.series).filter((n) => view.series[n].length);
  const box = document.getElementById("chart");
  document.getElementById("chart-unit").textContent =
    view.mode === "simulation" ? "(tokens by simulated hour)" : "(tokens by seconds since the page's start)";
  if (!names.length) { fill(box, [el("p", { class: "empty" }, "no balance yet")]); fill(document.getElementById("legend"), []); return; }
  const points = names.flatMap((n) => view.series[n]);
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const [W, H, L, B] = [600, 230, 58, 18];
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - 6);
  const sy = (y) => 6 + (1 - (y - y0) / (y1 - y0)) * (H - B - 6);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    root.append(svg("line", { x1: L, x2: W - 6, y1: sy(y), y2: sy(y), class: "axis" }));
    const label = svg("text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end" });
    label.textContent = Math.round(y).toLocaleString();
    root.append(label);
  }
  for (let i = 0; i <= 4; i++) {
    const x = x0 + ((x1 - x0) * i) / 4;
    const label = svg("text", { x: sx(x), y: H - 4, "text-anchor": "middle" });
    label.textContent = view.mode === "simulation" ? `${x.toFixed(0)} h` : `${x.toFixed(0)} s`;
    if (i === 4) label.setAttribute("text-anchor", "end");
    root.append(label);
  }
  for (const name of names) {
    // A step line: a balance holds its value until the next change.
    let d = "";
    view.series[name].forEach(([x, y], i) => {
      d += i === 0 ? `M${sx(x).toFixed(1)},${sy(y).toFixed(1)}` : `H${sx(x).toFixed(1)}V${sy(y).toFixed(1)}`;
    });
    root.append(svg("path", { d, fill: "none", stroke: palette[name], "stroke-width": 1.6, "data-agent": name }));
  }
  fill(box, [root]);
  fill(document.getElementById("legend"), names.map((n) => el("span", {}, el("i", { style: `background:${palette[n]}` }), n)));
}

function drawFlows(view) {
  const rows = view.flows.map((f) => el("tr", {}, el("td", {}, f.source), el("td", {}, "→"),
    el("td", {}, f.target), el("td", { class: "num" }, f.amount), el("td", { class: "num" }, f.count)));
  fill(document.querySelector("#flows tbody"), rows.length ? rows
    : [el("tr", {}, el("td", { colspan: 5, class: "empty" }, "no money has moved yet"))]);
}

function drawAuctions(view) {
  const cards = view.auctions.map((a) => {
    const bids = a.bids.map((b) => el("tr", { class: b.accepted ? "bid accepted" : "bid", "data-bidder": b.bidder },
      el("td", {}, b.accepted ? `★ ${b.bidder}` : b.bidder), el("td", { class: "num" }, b.cost),
      el("td", { class: "num" }, `${b.time_ms} ms`), el("td", { class: "num" }, b.confidence.toFixed(2)),
      el("td", { class: "num score" }, b.score || "…")));
    const bidHead = el("thead", {}, el("tr", {}, el("th", {}, "bidder"), el("th", { class: "num" }, "cost"),
      el("th", { class: "num" }, "time"), el("th", { class: "num" }, "conf."), el("th", { class: "num" }, "score")));
    const escrow = a.escrow_state ? el("div", { class: "meta" }, "escrow ",
      el("span", { class: "state escrow", "data-state": a.escrow_state }, a.escrow_state),
      a.paid !== "0" || a.fee !== "0" ? ` paid ${a.paid}, fee ${a.fee}` : "",
      a.refunded !== "0" ? `, refunded ${a.refunded}` : "") : null;
    return el("article", { class: "auction", "data-task": a.task_id, "data-state": a.state },
      el("header", {}, el("span", { class: "task" }, a.task_id),
        el("span", { class: "state", "data-state": a.state }, a.state)),
      el("div", { class: "meta" }, `${a.task_type} ${a.asset} · max ${a.max_cost} · by ${a.manager}`),
      bids.length ? el("table", { class: "bids" }, bidHead, el("tbody", {}, ...bids)) : el("div", { class: "empty" }, "waiting for bids…"),
      a.winner ? el("div", { class: "winner" }, `winner ${a.winner} at ${a.cost}`) : null,
      escrow);
  });
  fill(document.getElementById("auctions"), cards.length ? cards : [el("p", { class: "empty" }, "no auction yet")]);
}

function drawRefusals(view) {
  const items = view.refusals.map((r) => el("li", { "data-code": r.code, title: r.message },
    el("time", {}, clock(r.at_ms, view.mode)), `${r.agent} ${r.verb} `, el("span", { class: "code" }, r.code),
    ` — ${r.message}`));
  fill(document.getElementById("refusals"), items.length ? items : [el("li", { class: "empty" }, "none")]);
}

function drawSignals(view) {
  const assets = [...new Set(view.heat.map((c) => c.asset))];
  const max = Math.max(0.0001, ...view.heat.map((c) => c.strength));
  const cell = {};
  for (const c of view.heat) cell[`${c.asset}:${c.direction}`] = c.strength;
  const heat = document.getElementById("heat");
  if (!assets.length) {
    fill(heat, [el("tbody", {}, el("tr", {}, el("td", { class: "empty" }, view.mode === "simulation" ? "no signals in this simulation" : "no pheromones yet")))]);
  } else {
    const head = el("tr", {}, el("th", {}, "asset"), ...DIRECTIONS.map((d) => el("th", {}, d)));
    const rows = assets.map((asset) => el("tr", { "data-asset": asset }, el("th", {}, asset), ...DIRECTIONS.map((d) => {
      const s = cell[`${asset}:${d}`] || 0;
      return el("td", { style: `background: rgba(255, 140, 0, ${(0.08 + 0.85 * s / max).toFixed(3)})`, title: `${asset} ${d}: ${s}` },
        s ? s.toFixed(2) : "");
    })));
    fill(heat, [el("thead", {}, head), el("tbody", {}, ...rows)]);
  }
  fill(document.getElementById("signals"), view.signals.map((s) => el("li", { "data-kind": s.signal_type === "risk_alert" ? "risk" : "signal" },
    el("time", {}, clock(s.at_ms, view.mode)), `${s.sender} ${s.signal_type} ${s.asset} ${s.direction} (${s.confidence.toFixed(2)})`)));
}

function drawMetrics(view) {
  const rows = view.metrics.map((m) => el("tr", { "data-status": m.status, "data-metric": m.name },
    el("td", {}, m.name), el("td", { class: "num" }, m.value === null ? "—" : m.value.toFixed(3)),
    el("td", {}, m.target), el("td", {}, m.warning), el("td", { class: "status" }, m.status)));
  fill(document.querySelector("#metrics tbody"), rows);
}

function drawGovernance(view) {
  const none = (text) => [el("li", { class: "empty" }, text)];
  const votes = view.votes.map((v) => el("li", {}, el("span", { class: "state", "data-state": v.state }, v.state),
    ` ${v.title} (${v.kind}) · ${v.votes_cast} votes`, v.outcome ? ` · ${v.outcome}` : "", v.yes_share ? ` · yes ${v.yes_share}` : ""));
  const pools = view.pools.map((p) => el("li", {}, `${p.name} (${p.pool_id}) · ${p.balance} tokens · ${p.members.length} members`,
    p.closed ? " · closed" : p.funded ? " · funded" : ""));
  const coalitions = view.coalitions.map((c) => el("li", {}, `${c.coalition_id}: ${c.members.join(", ")} · value ${c.value.toFixed(2)} · ${c.state}`,
    c.in_core ? " · in the core" : ""));
  fill(document.getElementById("votes"), votes.length ? votes : none("no vote seen"));
  fill(document.getElementById("pools"), pools.length ? pools : none("no pool"));
  fill(document.getElementById("coalitions"), coalitions.length ? coalitions : none("no coalition seen"));
}

function drawEvents(view) {
  fill(document.getElementById("events"), view.events.map((e) => el("li", { "data-kind": e.kind },
    el("time", {}, clock(e.at_ms, view.mode)), e.text)));
}

function draw(view) {
  const palette = colours(Object.keys(view.series).sort());
  drawHeader(view);
  drawAgents(view);
  drawChart(view, palette);
  drawFlows(view);
  drawAuctions(view);
  drawRefusals(view);
  drawSignals(view);
  drawMetrics(view);
  drawGovernance(view);
  drawEvents(view);
  document.body.dataset.updated = String(view.updated_ms);
}

function connect() {
  const stream = new EventSource("/api/events");
  stream.onmessage = (message) => draw(JSON.parse(message.data));
  stream.onerror = () => {
    const badge = document.getElementById("connection");
    badge.dataset.state = "lost";
    badge.textContent = "dashboard server unreachable, retrying…";
  };
}

connect();
