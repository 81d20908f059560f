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

  // "Starting task 5151…" and "Stopping task 5151…" are said until the list shows that the
  // action ended (ready, failed, ended), then replaced by what came of it (issue 19).
  let pending = null;
  const await_ = (v, phases, doing, done) => {
    pending = { task_id: String(v.task_id), tool: v.tool || "mlflow", phases, done };
    say(doing);
  };
  const settle = (mine) => {
    if (!pending) return;
    const v = mine.visualizations.find((x) => String(x.task_id) === pending.task_id && x.tool === pending.tool);
    if (v && pending.phases.includes(v.phase)) {
      say(pending.done(v), v.phase === "failed");
      pending = null;
    }
  };
  const utc = (iso) => {
    const when = new Date(iso);
    return Number.isNaN(when.getTime()) ? iso : `${when.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  };
  const started = (v) => (v.phase === "ready" ? `Task ${v.task_id} is live: open it below.`
    : `Task ${v.task_id} could not start${v.reason ? `: ${v.reason}` : "."}`);

  const act = async (v, action, body, doing) => {
    say(doing);
    const { status, answer } = await call(`${path(v)}/${action}`, body);
    if (status >= 400) say(answer.error || `HTTP ${status}`, true);
    else if (action === "extend") say(`Extended task ${v.task_id}.`);
    else if (answer.cancelled) say(`Task ${v.task_id} is no longer queued.`);
    else await_(v, ["expired", "failed"], `Stopping task ${v.task_id}…`, () => `Stopped task ${v.task_id}.`);
    refresh();
  };

  // An ended or failed UI starts again from its permalink's relaunch (same checks as there).
  const relaunch = async (v) => {
    say(`Relaunching task ${v.task_id}…`);
    // A record without a task name (made by the CLI) is found by its task id (issue 19).
    const where = `${root}/t/${encodeURIComponent(v.task_name || v.task_id)}/${encodeURIComponent(v.tool)}/relaunch`;
    const resp = await fetch(where, { method: "POST", credentials: "same-origin", redirect: "manual" });
    if (resp.type !== "opaqueredirect" && resp.status >= 400) {
      say((await resp.text()) || `HTTP ${resp.status}`, true);
      return;
    }
    await_(v, ["ready", "failed"], `Starting task ${v.task_id} again…`, started);
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
    // "ended", not "expired": a UI stopped by a person ends the same way as one whose time is up.
    const ended = v.phase === "expired";
    state.appendChild(el("span", ended ? "ended" : v.phase, `phase ${v.phase}`));
    if (ended && v.updated_at) state.appendChild(el("div", `ended ${utc(v.updated_at)}`, "step-label"));
    if (!ended) state.appendChild(el("div", v.progress.label, "step-label"));
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
      actions.appendChild(button("Share", "share", () => openShare(v)));
    }
    if (["expired", "failed"].includes(v.phase)) {
      actions.appendChild(button("Relaunch", "relaunch", () => relaunch(v)));
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
    settle(mine);
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

  // Sharing one UI (issue 17): its visibility, and share links for people without an account
  // here. The panel lives outside the list, so the list's live updates leave it alone.
  const panel = document.getElementById("share-panel");
  const shareRows = document.getElementById("share-rows");
  let sharing = null;
  const sharePath = () => `${path(sharing)}`;
  const get = async (p) => {
    const resp = await fetch(root + p, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let answer = {};
    try { answer = await resp.json(); } catch (e) { answer = { error: `HTTP ${resp.status}` }; }
    return { status: resp.status, answer };
  };
  const showShares = (s) => {
    const kind = s.visibility.startsWith("groups:") ? "groups" : s.visibility;
    document.getElementById("visibility").value = kind;
    document.getElementById("visibility-groups").value = kind === "groups" ? s.visibility.slice(7) : "";
    document.getElementById("visibility-public").disabled = !s.public_allowed;
    shareRows.replaceChildren();
    for (const one of s.shares) {
      const tr = el("tr");
      tr.dataset.shareId = one.id;
      tr.dataset.state = one.state;
      tr.appendChild(el("td", one.label || "—"));
      tr.appendChild(el("td", one.created_by));
      tr.appendChild(el("td", utc(one.expires_at)));
      tr.appendChild(el("td", one.state));
      const cell = el("td");
      if (one.state === "active") {
        cell.appendChild(button("Revoke", "revoke", async () => {
          const { status, answer } = await call(`${sharePath()}/shares/${one.id}/revoke`, {});
          if (status >= 400) say(answer.error || `HTTP ${status}`, true);
          else say("Link revoked: it opens nothing any more.");
          loadShares();
        }));
      }
      tr.appendChild(cell);
      shareRows.appendChild(tr);
    }
  };
  const loadShares = async () => {
    const { status, answer } = await get(`${sharePath()}/shares`);
    if (status >= 400) { say(answer.error || `HTTP ${status}`, true); return; }
    showShares(answer);
  };
  const openShare = (v) => {
    sharing = { task_id: v.task_id, tool: v.tool };
    document.getElementById("share-task").textContent = `${v.task_id} (${v.tool})`;
    document.getElementById("share-link").hidden = true;
    document.getElementById("share-url").value = "";
    panel.hidden = false;
    loadShares();
  };
  document.getElementById("share-close").addEventListener("click", () => { panel.hidden = true; sharing = null; });
  document.getElementById("share-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { label: document.getElementById("share-label").value.trim(),
                   expires_in: document.getElementById("share-expires").value.trim() };
    const { status, answer } = await call(`${sharePath()}/shares`, body);
    if (status >= 400) { say(answer.error || `HTTP ${status}`, true); return; }
    document.getElementById("share-url").value = answer.link;
    document.getElementById("share-link").hidden = false;
    say("Link created: copy it now, it is shown only once.");
    loadShares();
  });
  document.getElementById("share-copy").addEventListener("click", async () => {
    const field = document.getElementById("share-url");
    field.select();
    try { await navigator.clipboard.writeText(field.value); say("Link copied."); }
    catch (e) { say("Select the link and copy it (the browser refused the clipboard)."); }
  });
  document.getElementById("visibility-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const kind = document.getElementById("visibility").value;
    const groups = document.getElementById("visibility-groups").value.trim();
    const visibility = kind === "groups" ? `groups:${groups}` : kind;
    const { status, answer } = await call(`${sharePath()}/visibility`, { visibility });
    if (status >= 400) { say(answer.error || `HTTP ${status}`, true); return; }
    say(`Visibility is now ${answer.visibility}.`);
    showShares(answer);
  });

  document.getElementById("start-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = { task_id: form.task_id.value.trim(), tool: form.tool.value, ttl: form.ttl.value.trim() };
    say(`Asking for task ${body.task_id}…`);
    const { status, answer } = await call("/api/v1/visualizations", body);
    if (status === 202) say(`Queued at position ${answer.queued.position}: ${answer.queued.reason || "waiting for room"}. It starts by itself.`);
    else if (status === 201) await_({ task_id: body.task_id, tool: body.tool }, ["ready", "failed"], `Starting task ${body.task_id}…`, started);
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
