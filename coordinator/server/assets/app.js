// The swarm dashboard's script. The pages are rendered by the server; this file only
// follows the swarm's event stream (`/v1/events`), fetches the changed part of the page again
// from the server, and sends the buttons' requests to `/v1` (with the session's CSRF token).
// It never builds HTML from data: new markup comes from the server's templates, parsed
// inertly with DOMParser.
//
// Live updates never starve the buttons: every page shares one stream through a SharedWorker
// (`events.js`), a page holds none while it is hidden or in the back/forward cache, and every
// request has a timeout and says what went wrong.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : null;
  const workerMeta = document.querySelector('meta[name="events-worker"]');

  // How long a request may take before the page gives up on it and says so.
  const REQUEST_TIMEOUT_MS = 15000;

  // Every event type the API streams (an EventSource needs a listener per named type).
  const EVENT_TYPES = [
    "objective_submitted", "task_ready", "task_started", "task_succeeded", "task_failed",
    "attempt_lost", "result_fenced", "task_in_review", "task_approved", "task_rejected",
    "tasks_spawned", "task_waiting", "wait_satisfied", "compensation_started",
    "plan_requested", "plan_rejected", "task_cancelled", "objective_succeeded",
    "objective_failed", "objective_cancelled", "budget_reached", "budget_raised",
    "agent_registered", "agent_health_changed",
    "agent_restarted", "agent_deregistered", "schedule_created", "schedule_paused",
    "schedule_resumed", "schedule_deleted", "schedule_skipped", "schedule_fire_failed",
    "schedule_fired",
  ];
  const TERMINAL = ["objective_succeeded", "objective_failed", "objective_cancelled"];

  function setLiveState(text, ok) {
    const el = document.getElementById("live-state");
    if (el) {
      el.textContent = text;
      el.classList.toggle("on", ok);
    }
  }

  // A request to the API; resolves to {ok, status, body} where body is the parsed JSON (a
  // problem on failure) or null.
  // A request that gives up after REQUEST_TIMEOUT_MS, saying so.
  async function api(method, url, payload, extraHeaders) {
    const headers = Object.assign({ Accept: "application/json" }, extraHeaders || {});
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const timeoutMs = REQUEST_TIMEOUT_MS;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const response = await fetch(url, {
        method,
        headers,
        credentials: "same-origin",
        body: payload === undefined ? undefined : JSON.stringify(payload),
        signal: abort.signal,
      });
      let parsed = null;
      const type = response.headers.get("content-type") || "";
      if (type.includes("json")) {
        try { parsed = await response.json(); } catch (err) { parsed = null; }
      }
      return { ok: response.ok, status: response.status, body: parsed };
    } catch (err) {
      const detail = abort.signal.aborted
        ? "The server did not answer within " + Math.round(timeoutMs / 1000) + " s; the " +
          "request may still take effect. Reload the page to see where things stand."
        : "The server cannot be reached (" + err.message + ").";
      return { ok: false, status: 0, body: { detail } };
    } finally {
      clearTimeout(timer);
    }
  }

  function problemText(result) {
    if (result.body && result.body.detail) return result.body.detail;
    return "the request failed (" + result.status + ")";
  }

  // Fetches server-rendered HTML and parses it without running anything in it.
  async function fetchFragment(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(url, {
        credentials: "same-origin", headers: { Accept: "text/html" }, signal: abort.signal,
      });
      if (!response.ok) throw new Error("fragment " + url + ": " + response.status);
      const text = await response.text();
      return new DOMParser().parseFromString(text, "text/html");
    } finally {
      clearTimeout(timer);
    }
  }

  // Runs `refresh` a moment after the last call, never two at once, and at most every
  // `minGapMs`: a burst of events costs one fetch.
  function refresher(refresh, minGapMs) {
    let timer = null;
    let running = false;
    let again = false;
    let last = 0;
    async function run() {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      last = Date.now();
      try { await refresh(); } catch (err) { console.warn(err); }
      running = false;
      if (again) { again = false; schedule(); }
    }
    function schedule() {
      if (timer !== null) return;
      const wait = Math.max(60, minGapMs - (Date.now() - last));
      timer = setTimeout(run, wait);
    }
    return schedule;
  }

  // Follows the swarm's event stream from the sequence number the page was read at
  // (`data-after-seq`): `onEvent(type, record)` for each later event, `onGap()` when events
  // were missed and the page should read its content again. The stream is the one the
  // shared worker holds for every page, or the page's own where there is no SharedWorker.
  // Either way, the page holds none while hidden: it leaves on `pagehide` and follows again
  // on `pageshow` (back from the back/forward cache). Returns a function that stops
  // following.
  function followSwarm(onEvent, onGap) {
    let seen = Number(body.dataset.afterSeq || "0");
    let stop = null;
    let ended = false;

    function deliver(type, seq, data) {
      if (seq && seq <= seen) return;
      if (seq) seen = seq;
      let record = null;
      try { record = JSON.parse(data); } catch (err) { record = null; }
      onEvent(type, record);
    }

    function shared() {
      const port = new SharedWorker(workerMeta.content, { name: "swarm-events" }).port;
      port.onmessage = (m) => {
        const message = m.data || {};
        if (message.kind === "event") deliver(message.type, message.seq, message.data);
        else if (message.kind === "state") setLiveState(message.text, message.live);
        else if (message.kind === "joined" && message.seq > seen) { seen = message.seq; onGap(); }
      };
      port.start();
      port.postMessage({ op: "join", after: seen, types: EVENT_TYPES });
      return () => { port.postMessage({ op: "leave" }); port.onmessage = null; };
    }

    // The browser reconnects by itself with Last-Event-ID.
    function own() {
      const source = new EventSource("/v1/events?after=" + encodeURIComponent(String(seen)));
      source.onopen = () => setLiveState("live", true);
      source.onerror = () => setLiveState("reconnecting…", false);
      for (const type of EVENT_TYPES) {
        source.addEventListener(type, (e) => deliver(type, Number(e.lastEventId) || 0, e.data));
      }
      return () => source.close();
    }

    function start() {
      if (ended || stop !== null) return;
      if (typeof SharedWorker === "function" && workerMeta) {
        try { stop = shared(); return; } catch (err) { console.warn(err); }
      }
      if (typeof EventSource === "function") stop = own();
    }
    function pause() {
      if (stop !== null) { stop(); stop = null; }
    }
    window.addEventListener("pagehide", pause);
    window.addEventListener("pageshow", (e) => { if (e.persisted) start(); });
    start();
    return () => { ended = true; pause(); };
  }

  // ---- Elapsed times of running tasks ------------------------------------------------------

  function shortDuration(ms) {
    if (ms < 1000) return ms + "ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
    if (ms < 3600000) return Math.floor(ms / 60000) + "m " + String(Math.floor(ms / 1000) % 60).padStart(2, "0") + "s";
    return Math.floor(ms / 3600000) + "h " + String(Math.floor(ms / 60000) % 60).padStart(2, "0") + "m";
  }

  setInterval(() => {
    const now = Date.now();
    for (const el of document.querySelectorAll(".elapsed[data-since-ms]")) {
      const run = Number(el.dataset.runMs) || 0;
      const since = Number(el.dataset.sinceMs) || now;
      el.textContent = shortDuration(run + Math.max(0, now - since));
    }
  }, 1000);

  // ---- Relative times of schedules ----------------------------------------------------------

  // Says a time relative to now as `relative` in `http/ui/schedules.rs` does.
  function relativeText(deltaMs) {
    const secs = Math.floor(Math.abs(deltaMs) / 1000);
    let span;
    if (secs === 0) return "now";
    if (secs < 60) span = secs + "s";
    else if (secs < 3600) span = Math.floor(secs / 60) + "m";
    else if (secs < 86400) span = Math.floor(secs / 3600) + "h " + String(Math.floor(secs / 60) % 60).padStart(2, "0") + "m";
    else span = Math.floor(secs / 86400) + "d " + (Math.floor(secs / 3600) % 24) + "h";
    return deltaMs >= 0 ? "in " + span : span + " ago";
  }

  // ---- Board -------------------------------------------------------------------------------

  function boardQuery(extra) {
    const params = new URLSearchParams(body.dataset.filter || "");
    for (const [k, v] of Object.entries(extra)) params.set(k, v);
    return params.toString();
  }

  function setupBoard() {
    const board = document.getElementById("board");
    if (!board) return;
    const refresh = refresher(async () => {
      const limits = {};
      for (const column of board.querySelectorAll("section[data-column]")) {
        const shown = column.querySelectorAll("[data-cards] > li").length;
        limits["limit." + column.dataset.column] = String(Math.min(500, Math.max(50, shown)));
      }
      const doc = await fetchFragment("/ui/board/columns?" + boardQuery(limits));
      for (const fresh of doc.querySelectorAll("section[data-column]")) {
        const column = board.querySelector('section[data-column="' + fresh.dataset.column + '"]');
        if (!column) continue;
        column.querySelector("[data-count]").textContent = fresh.querySelector("[data-count]").textContent;
        column.querySelector("[data-cards]").replaceChildren(...fresh.querySelector("[data-cards]").childNodes);
        column.querySelector("[data-more]").replaceChildren(...fresh.querySelector("[data-more]").childNodes);
      }
    }, 250);
    board.addEventListener("click", async (e) => {
      const button = e.target.closest("[data-more-after]");
      if (!button) return;
      const done = busy(button);
      const column = button.closest("section[data-column]");
      let doc;
      try {
        doc = await fetchFragment("/ui/board/columns?" + boardQuery({
          status: button.dataset.moreStatus, after: button.dataset.moreAfter,
        }));
      } catch (err) {
        done();
        showError(button, "The next cards could not be loaded: " +
          (err.name === "AbortError" ? "the server did not answer in time." : err.message));
        return;
      }
      column.querySelector("[data-cards]").append(...doc.querySelector("[data-cards]").childNodes);
      column.querySelector("[data-more]").replaceChildren(...doc.querySelector("[data-more]").childNodes);
    });
    followSwarm((type) => {
      if (!type.startsWith("agent_") && !type.startsWith("schedule_")) refresh();
    }, refresh);
  }

  // ---- Live parts of the other pages -------------------------------------------------------

  // Fetches `#live` again from its `data-live` URL. The review queue keeps items whose
  // output is being edited.
  function liveRefresher(minGapMs) {
    const live = document.getElementById("live");
    if (!live) return () => {};
    return refresher(async () => {
      const doc = await fetchFragment(live.dataset.live);
      if (live.dataset.merge === "review") mergeReview(live, doc);
      else {
        const open = new Set([...live.querySelectorAll("details[open]")].map(detailsKey));
        live.replaceChildren(...doc.body.childNodes);
        for (const d of live.querySelectorAll("details")) if (open.has(detailsKey(d))) d.open = true;
      }
    }, minGapMs);
  }

  function detailsKey(d) {
    const row = d.closest("[data-task]");
    return (row ? row.dataset.task : "") + "/" + (d.querySelector("summary") || {}).textContent;
  }

  function edited(item) {
    const editor = item.querySelector("[data-output-editor]");
    return editor && (editor.value !== editor.dataset.original || editor === document.activeElement);
  }

  function mergeReview(live, doc) {
    const list = live.querySelector("[data-items]");
    const freshList = doc.querySelector("[data-items]");
    const kept = new Map();
    for (const item of list.querySelectorAll("[data-review]")) if (edited(item)) kept.set(item.dataset.review, item);
    const next = [];
    for (const item of freshList.querySelectorAll("[data-review]")) next.push(kept.get(item.dataset.review) || item);
    list.replaceChildren(...next);
    const total = live.querySelector("[data-review-total]");
    const freshTotal = doc.querySelector("[data-review-total]");
    if (total && freshTotal) total.replaceWith(freshTotal);
  }

  function setupObjective() {
    const id = body.dataset.objective;
    const refresh = liveRefresher(200);
    // An objective that has ended changes no more.
    if (body.dataset.running !== "true") return refresh;
    const stop = followSwarm((type, record) => {
      if (!record || record.objective !== id) return;
      refresh();
      // An objective that has ended changes no more.
      if (TERMINAL.includes(type)) { stop(); setLiveState("ended", false); }
    }, refresh);
    return refresh;
  }

  function setupFeedPage(filter, minGapMs) {
    const refresh = liveRefresher(minGapMs);
    followSwarm((type) => {
      if (filter(type)) refresh();
    }, refresh);
    return refresh;
  }

  // The schedules follow the swarm's schedule events; their relative times tick, and once a
  // next fire time shown has passed the list is read again (at the server's new "now", so
  // the passed time is gone and this does not repeat).
  function setupSchedules() {
    const refresh = setupFeedPage((t) => t.startsWith("schedule_"), 250);
    setInterval(() => {
      const now = Date.now();
      for (const el of document.querySelectorAll("[data-relative-ms]")) {
        el.textContent = relativeText(Number(el.dataset.relativeMs) - now);
      }
      for (const el of document.querySelectorAll("[data-next-fire]")) {
        if (Number(el.dataset.nextFire) < now - 1000) { refresh(); break; }
      }
    }, 1000);
    return refresh;
  }

  // ---- Actions -----------------------------------------------------------------------------

  function showError(near, text) {
    const scope = near.closest("[data-review], .agent, .page-head, #main") || document;
    const target = scope.querySelector("[data-editor-error], [data-action-error]") ||
      document.querySelector("[data-action-error]");
    if (target) target.textContent = text;
  }

  // A destructive button asks for a second click within four seconds.
  function confirmed(button) {
    if (button.dataset.armed === "1") return true;
    const label = button.textContent;
    button.dataset.armed = "1";
    button.textContent = "Click again to confirm";
    setTimeout(() => { button.dataset.armed = ""; button.textContent = label; }, 4000);
    return false;
  }

  // Marks `button` as working (disabled, busy, its label followed by "…") until the returned
  // function is called.
  function busy(button) {
    const label = button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = label.trim() + "…";
    return () => {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = label;
    };
  }

  let afterAction = () => {};

  async function act(button, method, url, payload) {
    for (const el of document.querySelectorAll("[data-action-error]")) el.textContent = "";
    const done = busy(button);
    const result = await api(method, url, payload);
    done();
    if (!result.ok) { showError(button, problemText(result)); return false; }
    // A success clears what an earlier failure said.
    for (const el of document.querySelectorAll("[data-action-error]")) el.textContent = "";
    afterAction();
    return true;
  }

  document.addEventListener("click", async (e) => {
    const target = e.target.closest("button");
    if (!target) return;
    const d = target.dataset;
    if (d.cancel) {
      if (!confirmed(target)) return;
      await act(target, "POST", "/v1/objectives/" + encodeURIComponent(d.cancel) + "/cancel");
    } else if (d.budgetContinue) {
      await act(target, "POST", "/v1/objectives/" + encodeURIComponent(d.budgetContinue) + "/budget",
        { decision: "continue", by: "dashboard" });
    } else if (d.budgetStop) {
      if (!confirmed(target)) return;
      await act(target, "POST", "/v1/objectives/" + encodeURIComponent(d.budgetStop) + "/budget",
        { decision: "stop", by: "dashboard" });
    } else if (d.pause) {
      await act(target, "POST", "/v1/schedules/" + encodeURIComponent(d.pause) + "/pause");
    } else if (d.resume) {
      await act(target, "POST", "/v1/schedules/" + encodeURIComponent(d.resume) + "/resume");
    } else if (d.drain) {
      if (!confirmed(target)) return;
      await act(target, "DELETE", "/v1/agents/" + encodeURIComponent(d.drain));
    } else if (d.approve) {
      const item = target.closest("[data-review]");
      const editor = item.querySelector("[data-output-editor]");
      const error = item.querySelector("[data-editor-error]");
      error.textContent = "";
      let payload = {};
      if (editor.value !== editor.dataset.original) {
        try {
          payload = { output: JSON.parse(editor.value) };
        } catch (err) {
          error.textContent = "The output is not valid JSON: " + err.message;
          editor.setAttribute("aria-invalid", "true");
          editor.focus();
          return;
        }
      }
      editor.removeAttribute("aria-invalid");
      if (await act(target, "POST", "/v1/tasks/" + encodeURIComponent(d.approve) + "/approve", payload)) item.remove();
    } else if (d.reject) {
      const item = target.closest("[data-review]");
      const reason = item.querySelector("[data-reason-input]");
      if (!reason.value.trim()) {
        item.querySelector("[data-editor-error]").textContent = "Give a reason for rejecting.";
        reason.focus();
        return;
      }
      if (await act(target, "POST", "/v1/tasks/" + encodeURIComponent(d.reject) + "/reject", { reason: reason.value.trim() })) item.remove();
    } else if (d.retry) {
      const item = target.closest("[data-review]");
      if (await act(target, "POST", "/v1/tasks/" + encodeURIComponent(d.retry) + "/retry")) item.remove();
    }
  });

  // The logout form's POST carries the CSRF token like any other state change.
  const logout = document.querySelector("form.logout");
  if (logout) {
    logout.addEventListener("submit", async (e) => {
      e.preventDefault();
      await api("POST", "/ui/logout");
      window.location.assign("/ui/login");
    });
  }

  // ---- Submit form -------------------------------------------------------------------------

  function setupSubmit() {
    const form = document.getElementById("submit-form");
    if (!form) return;
    const errorFor = (field) => form.querySelector('[data-error-for="' + field + '"]');
    const say = (field, text, path) => {
      const slot = errorFor(field) || errorFor("");
      slot.textContent = text;
      slot.dataset.field = path || field;
      const input = slot.closest(".field") && slot.closest(".field").querySelector("input, textarea");
      if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
    };
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
      for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
      const goal = form.elements.goal.value;
      const graph = form.elements.tasks.value.trim();
      const key = form.elements.idempotency_key.value.trim();
      let objective = { goal };
      if (graph) {
        let parsed;
        try { parsed = JSON.parse(graph); } catch (err) { say("tasks", "Not valid JSON: " + err.message); return; }
        if (Array.isArray(parsed)) objective.tasks = parsed;
        else if (parsed && typeof parsed === "object") objective = Object.assign({ goal }, parsed, goal ? { goal } : {});
        else { say("tasks", "Give a list of tasks, or an objective object."); return; }
      }
      if (!String(objective.goal || "").trim()) { say("goal", "Give the objective a goal."); return; }
      const button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      const result = await api("POST", "/v1/objectives", objective, key ? { "Idempotency-Key": key } : {});
      button.disabled = false;
      if (result.ok && result.body && result.body.id) {
        window.location.assign("/ui/?objective=" + encodeURIComponent(result.body.id));
        return;
      }
      const field = (result.body && result.body.field) || "";
      const text = problemText(result);
      if (field === "goal" || field === "Idempotency-Key") say(field, text);
      else if (field) say("tasks", text, field);
      else say("", text);
    });
  }

  // ---- Pages -------------------------------------------------------------------------------

  if (page === "board") setupBoard();
  else if (page === "objective") afterAction = setupObjective();
  else if (page === "agents") afterAction = setupFeedPage((t) => !t.startsWith("schedule_"), 500);
  else if (page === "schedules") afterAction = setupSchedules();
  else if (page === "review") {
    afterAction = setupFeedPage((t) => t.startsWith("task_") || t.startsWith("objective_"), 200);
  } else if (page === "submit") setupSubmit();
})();
