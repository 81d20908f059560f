// The catalog page: start a visualization, follow "my visualizations" live (Server-Sent
// Events carrying the whole list whenever one of them changes), extend and stop them, and
// count down to each expiry. Every action is a JSON call that also works without this page;
// state-changing calls carry the session's CSRF token. Values are set as text, never as HTML.
"use strict";
(() => {
  const card = document.getElementById("catalog");
  if (!card || card.dataset.signedIn !== "true") return;
  const root = card.dataset.root || "";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const rows = document.getElementById("mine-rows");
  const message = document.getElementById("message");
  const capacityLine = document.getElementById("capacity");
  let skew = 0; // server clock minus this browser's, from each update
  let renderedAt = 0; // server time of the list on screen

  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  };
  const say = (text, error) => {
    message.textContent = text;
    message.classList.toggle("error", Boolean(error));
  };
  const call = async (path, body) => {
    const resp = await fetch(root + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: JSON.stringify(body || {}),
    });
    let answer = {};
    try { answer = await resp.json(); } catch (e) { answer = { error: `HTTP ${resp.status}` }; }
    return { status: resp.status, answer };
  };
  const duration = (seconds) => {
    if (seconds <= 0) return "0 s";
    const parts = [];
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]]) {
      const count = Math.floor(seconds / size);
      seconds -= count * size;
      if (count) parts.push(`${count} ${unit}`);
    }
    return parts.slice(0, 3).join(" ");
  };
  const path = (v) => `/api/v1/visualizations/${encodeURIComponent(v.task_id)}/${encodeURIComponent(v.tool)}`;

  const button = (label, id, onClick) => {
    const b = el("button", label, "button small");
    b.type = "button";
    b.dataset.action = id;
    b.addEventListener("click", onClick);
    return b;
  };

  const act = async (v, action, body, doing) => {
    say(doing);
    const { status, answer } = await call(`${path(v)}/${action}`, body);
    if (status >= 400) say(answer.error || `HTTP ${status}`, true);
    else say(action === "extend" ? `Extended task ${v.task_id}.` : `Stopping task ${v.task_id}…`);
    refresh();
  };

  const liveRow = (v) => {
    const tr = el("tr");
    tr.dataset.taskId = v.task_id;
    tr.dataset.tool = v.tool;
    tr.dataset.phase = v.phase;
    const task = el("td");
    task.appendChild(el("strong", v.task_id));
    if (v.task_name) task.appendChild(el("div", v.task_name, "muted"));
    tr.appendChild(task);
    tr.appendChild(el("td", v.tool));
    const state = el("td");
    state.appendChild(el("span", v.phase, `phase ${v.phase}`));
    state.appendChild(el("div", v.progress.label, "step-label"));
    const bar = el("span", null, "progress");
    const fill = el("span");
    fill.style.width = `${Math.round((100 * v.progress.step) / v.progress.of)}%`;
    bar.appendChild(fill);
    if (!["expired", "failed"].includes(v.phase)) state.appendChild(bar);
    if (v.reason) state.appendChild(el("div", v.reason, "reason"));
    tr.appendChild(state);
    const left = el("td", "", "countdown");
    if (v.phase === "ready" && v.expires_at) left.dataset.expiresAt = v.expires_at;
    tr.appendChild(left);
    const cell = el("td");
    const actions = el("div", "", "actions");
    cell.appendChild(actions);
    if (v.phase === "ready" && v.url) {
      const open = el("a", "Open", "button small primary");
      open.href = v.url;
      open.target = "_blank";
      open.rel = "noopener";
      open.dataset.action = "open";
      actions.appendChild(open);
      const by = el("input");
      by.value = "1h";
      by.setAttribute("aria-label", "extend by");
      by.dataset.field = "by";
      actions.appendChild(by);
      actions.appendChild(button("Extend", "extend", () => act(v, "extend", { by: by.value }, "Extending…")));
    }
    if (!["expired", "failed", "expiring"].includes(v.phase)) {
      actions.appendChild(button("Stop", "stop", () => act(v, "stop", {}, "Stopping…")));
    }
    tr.appendChild(cell);
    return tr;
  };

  const queuedRow = (q) => {
    const tr = el("tr");
    tr.dataset.taskId = q.task_id;
    tr.dataset.tool = q.tool;
    tr.dataset.phase = "queued";
    tr.appendChild(el("td", q.task_id));
    tr.appendChild(el("td", q.tool));
    const state = el("td");
    state.appendChild(el("span", `queued #${q.position}`, "phase queued"));
    if (q.reason) state.appendChild(el("div", `waiting: ${q.reason}`, "muted"));
    tr.appendChild(state);
    tr.appendChild(el("td", ""));
    const cell = el("td");
    const actions = el("div", "", "actions");
    actions.appendChild(button("Cancel", "cancel", () => act(q, "stop", {}, "Cancelling…")));
    cell.appendChild(actions);
    tr.appendChild(cell);
    return tr;
  };

  const tick = () => {
    const now = Date.now() + skew;
    for (const cell of rows.querySelectorAll("td[data-expires-at]")) {
      cell.textContent = duration(Math.floor((Date.parse(cell.dataset.expiresAt) - now) / 1000));
    }
  };

  const render = (mine) => {
    // A fetch answered before the last streamed update may arrive after it: keep the newer.
    const at = Date.parse(mine.now);
    if (at < renderedAt) return;
    renderedAt = at;
    skew = at - Date.now();
    rows.replaceChildren();
    for (const q of mine.queued) rows.appendChild(queuedRow(q));
    for (const v of mine.visualizations) rows.appendChild(liveRow(v));
    if (!rows.children.length) {
      const tr = el("tr", null, "empty");
      const td = el("td", "None yet: start one above.");
      td.colSpan = 5;
      tr.appendChild(td);
      rows.appendChild(tr);
    }
    tick();
    capacity();
  };

  const capacity = async () => {
    const resp = await fetch(`${root}/api/v1/capacity`, { credentials: "same-origin" });
    if (!resp.ok) return;
    const c = await resp.json();
    const parts = [];
    const slots = (s) => (s.limit === null ? `${s.used} in use` : `${s.used} of ${s.limit} in use`);
    parts.push(`All: ${slots(c.total)}`);
    if (c.user) parts.push(`yours: ${slots(c.user)}`);
    for (const [name, s] of Object.entries(c.groups || {})) parts.push(`${name}: ${slots(s)}`);
    if (c.waiting) parts.push(`${c.waiting} waiting`);
    capacityLine.textContent = parts.join(" · ");
  };

  const refresh = async () => {
    const resp = await fetch(`${root}/api/v1/visualizations`, { credentials: "same-origin" });
    if (resp.ok) render(await resp.json());
  };

  document.getElementById("start-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = { task_id: form.task_id.value.trim(), tool: form.tool.value, ttl: form.ttl.value.trim() };
    say(`Asking for task ${body.task_id}…`);
    const { status, answer } = await call("/api/v1/visualizations", body);
    if (status === 202) say(`Queued at position ${answer.queued.position}: ${answer.queued.reason || "waiting for room"}. It starts by itself.`);
    else if (status === 201) say(`Starting task ${body.task_id}…`);
    else if (status === 200) say(`Task ${body.task_id} already has a live visualization.`);
    else say(answer.error || `HTTP ${status}`, true);
    refresh();
  });

  // A refused reconnection (429: too many open pages) closes the EventSource for good: open a
  // new one after a pause that grows while refusals go on (ended streams reconnect by themselves).
  let pause = 5000;
  const listen = () => {
    const events = new EventSource(`${root}/api/v1/visualizations/events`);
    events.addEventListener("mine", (m) => { pause = 5000; render(JSON.parse(m.data)); });
    events.addEventListener("error", () => {
      if (events.readyState !== EventSource.CLOSED) return;
      setTimeout(listen, pause + Math.random() * 1000);
      pause = Math.min(pause * 2, 120000);
    });
  };
  listen();
  setInterval(tick, 1000);
  refresh();
})();
