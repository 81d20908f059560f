// The permalink page: start at once when nothing runs yet, then follow the phases the server
// streams (Server-Sent Events, each carrying the server-rendered progress) and open the UI
// when it is ready. Without JavaScript the page still works through its buttons and reloads.
"use strict";
(() => {
  const live = document.getElementById("live");
  if (!live) return;
  const stay = live.dataset.stay === "true";
  const permalink = live.dataset.permalink;
  // A refused start is shown at the address the form posted to: put the permalink back, so a
  // reload asks again (the task may have finished since).
  if (permalink && location.pathname + location.search !== permalink) {
    history.replaceState(null, "", permalink);
  }
  // A refusal stays on screen until the person tries again: there is no record to follow.
  if (live.querySelector('.state[data-phase="refused"]')) return;
  const autostart = live.querySelector("form[data-autostart]");
  if (autostart) {
    // Starting is a POST, never a side effect of GET: link checkers and crawlers start nothing.
    autostart.requestSubmit();
    return;
  }
  const follow = (state) => {
    if (state.phase === "ready" && state.url && !stay) location.assign(state.url);
  };
  // The server ends each stream after a few minutes and the browser reconnects by itself. A
  // refused reconnection (429: too many open pages; the server restarting) closes the
  // EventSource for good: open a new one after a pause that grows while refusals go on.
  let pause = 5000;
  const listen = () => {
    const events = new EventSource(live.dataset.events);
    events.addEventListener("state", (message) => {
      pause = 5000;
      const state = JSON.parse(message.data);
      live.innerHTML = state.html;
      follow(state);
    });
    events.addEventListener("error", () => {
      if (events.readyState !== EventSource.CLOSED) return; // reconnecting by itself
      setTimeout(listen, pause + Math.random() * 1000);
      pause = Math.min(pause * 2, 120000);
    });
  };
  listen();
})();
