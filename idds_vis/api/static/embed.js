// idds-vis monitor snippet: one script tag on a task page renders the task's visualizations.
//   <script src="https://idds-vis.example.org/embed.js" data-task-id="12345" async></script>
// (or data-task-name="user.jdoe.train/"). It reads GET /api/v1/tasks/... and draws into a
// shadow root, so the host page's styles and the snippet's cannot touch each other. Every
// value is set as text, never parsed as HTML.
"use strict";
(() => {
  const me = document.currentScript;
  if (!me) return;
  const base = new URL(".", me.src).href.replace(/\/$/, "");
  const id = me.dataset.taskId;
  const name = me.dataset.taskName;
  if (!id && !name) return;
  const api = id
    ? `${base}/api/v1/tasks/${encodeURIComponent(id)}`
    : `${base}/api/v1/tasks/by-name/${encodeURIComponent(name)}`;

  const host = document.createElement("div");
  host.className = "idds-vis-embed";
  me.parentNode.insertBefore(host, me.nextSibling);
  const root = host.attachShadow({ mode: "open" });
  const css = `
    :host { all: initial; display: block; margin: 8px 0; font: 13px/1.4 system-ui, sans-serif; color: #1f2933; }
    .box { border: 1px solid #d3dae3; border-radius: 6px; padding: 8px 12px; background: #f8fafc; max-width: 760px; }
    .title { font-weight: 600; margin-bottom: 4px; }
    .row { display: flex; flex-wrap: wrap; gap: 4px 10px; align-items: baseline; padding: 3px 0; }
    .badge { border-radius: 10px; padding: 0 8px; font-size: 12px; background: #e4e7eb; }
    .ready { background: #d3f9d8; color: #1b5e20; } .failed { background: #ffe3e3; color: #a61b1b; }
    .expired { background: #eceff1; color: #52606d; }
    .muted { color: #616e7c; } .reason { color: #a61b1b; flex-basis: 100%; }
    a { color: #0b63c5; }`;
  if ("adoptedStyleSheets" in root && "replaceSync" in CSSStyleSheet.prototype) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } else {
    const style = document.createElement("style");
    style.textContent = css;
    root.appendChild(style);
  }
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  };
  const link = (href, text) => {
    const a = el("a", text);
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener";
    return a;
  };
  // "2026-12-06 06:42 UTC": one order for everyone, and the zone said (not the browser's
  // locale order, nor its zone unnamed).
  const utc = (iso) => {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return iso;
    return `${when.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  };
  const box = el("div", "", "box");
  box.appendChild(el("div", "Visualization (idds-vis)", "title"));
  root.appendChild(box);

  const render = (status, body) => {
    if (status !== 200) {
      box.appendChild(el("div", body && body.error ? body.error : `idds-vis answered ${status}`, "muted"));
      return;
    }
    for (const inst of body.instances) {
      const row = el("div", "", "row");
      row.dataset.phase = inst.phase;
      row.appendChild(el("strong", inst.tool));
      // "ended": a stopped UI and one whose time is up look the same to the reader.
      row.appendChild(el("span", inst.phase === "expired" ? "ended" : inst.phase, `badge ${inst.phase}`));
      if (inst.phase === "ready" && inst.url) row.appendChild(link(inst.url, "Open the UI"));
      if (inst.phase === "ready" && inst.expires_at) {
        row.appendChild(el("span", `live until ${utc(inst.expires_at)}`, "muted"));
      }
      if (inst.permalink && inst.phase !== "ready") {
        const label = inst.phase === "expired" || inst.phase === "failed" ? "Relaunch" : "Follow";
        row.appendChild(link(inst.permalink, label));
      }
      if (inst.reason) row.appendChild(el("span", inst.reason, "reason"));
      box.appendChild(row);
    }
  };
  fetch(api, { headers: { Accept: "application/json" } })
    .then((resp) => resp.json().then((body) => render(resp.status, body), () => render(resp.status, null)))
    .catch(() => box.appendChild(el("div", "idds-vis cannot be reached right now.", "muted")));
})();
