// retrywatch's live page: the REST API and the event stream of the service that serves
// it, nothing else (the page's Content-Security-Policy allows no other origin).
//
// Everything read from the API is put in the page as text (textContent), never as HTML:
// log lines are written by whoever sends requests to nginx.
//
// The event stream is read with fetch(), not EventSource, so that the API token can go in
// the Authorization header; it resumes with Last-Event-ID after a break.
"use strict";

(function () {
  const TOKEN_KEY = "retrywatch-token";
  const REFRESH_MS = 5000;   // connections, sources, upstreams: read again this often
  const SHOWN = 50;          // alert cards at most (the rest counted)
  const RESOLVED_SHOWN = 10;

  const state = {
    alerts: new Map(),       // runaway connections' alerts firing, by id
    disk: new Map(),         // disk alerts firing, by id
    peers: new Map(),        // upstream alerts firing, by id
    upstreams: [],           // the peers counted (GET /api/v1/upstreams), most failing first
    resolved: [],            // resolved while the page is open, newest first
    connections: [],
    sources: [],
    lastEventId: null,
    renderQueued: false,
    following: false,
  };

  const $ = (id) => document.getElementById(id);

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const t = token();
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }

  class Unauthorized extends Error {}

  async function api(path) {
    const r = await fetch(path, { headers: headers(), cache: "no-store" });
    if (r.status === 401) throw new Unauthorized(path);
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  function status(text, kind) {
    const s = $("status");
    s.textContent = text;
    s.className = "status" + (kind ? " " + kind : "");
  }

  function askToken() {
    status("API token needed", "down");
    $("token").hidden = false;
    $("token-input").focus();
  }

  // -- rendering -----------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400) + " d";
  }

  function topOf(dict) {
    const entries = Object.entries(dict || {});
    entries.sort((a, b) => b[1] - a[1]);
    return entries;
  }

  function alertCard(a) {
    const ups = topOf(a.upstreams).slice(0, 3).map(([k, v]) => k + " (" + num(v) + ")");
    const d = a.diagnosis;
    return el("article", { class: "card " + a.confidence, "data-id": a.id },
      el("h3", { text: "*" + a.cid + " (pid " + a.pid + ")" },
        el("span", { class: "badge", text: a.confidence })),
      el("p", { class: "meta", text: a.source + (a.subsystem ? " · " + a.subsystem : "") +
        " · " + num(a.failures_in_window) + " failures in the window, peak " +
        num(a.peak_per_second) + "/s · since " + a.first_seen }),
      ups.length ? el("p", { class: "meta", text: "upstream: " + ups.join(", ") }) : null,
      d ? el("p", { class: "cause", text: d.cause }) : null,
      d ? el("p", { class: "fix", text: d.fix }) : null,
      el("p", { class: "meta", text: "alert " + a.id + (d ? " · " + d.code : "") }));
  }

  function diskCard(a) {
    const f = a.forecast;
    const when = f.seconds_to_full === 0 ? "full now" : "full in " + seconds(f.seconds_to_full);
    return el("article", { class: "card disk", "data-id": a.id },
      el("h3", { text: "Disk " + a.mount + ": " + when },
        el("span", { class: "badge", text: "disk" })),
      el("p", { class: "meta", text: bytes(f.free_bytes) + " free of " + bytes(f.size_bytes) +
        ", growing " + bytes(f.bytes_per_second) + "/s" }),
      el("p", { class: "cause", text: a.diagnosis.cause }),
      el("p", { class: "fix", text: a.diagnosis.fix }),
      el("p", { class: "meta", text: "alert " + a.id + " · GET /api/v1/disk" }));
  }

  function upstreamCard(a) {
    const f = a.figures;
    const linked = a.runaway_alerts.map((r) => "*" + r.cid);
    return el("article", { class: "card upstream", "data-id": a.id },
      el("h3", { text: "Upstream " + a.peer },
        el("span", { class: "badge", text: "upstream" })),
      el("p", { class: "meta", text: num(f.failures) + " failures from " +
        num(f.connections) + " connections in the last minute, baseline " +
        f.baseline_per_second + "/s" }),
      linked.length ? el("p", { class: "meta", text: "runaway on it: " + linked.join(", ") })
        : null,
      el("p", { class: "cause", text: a.diagnosis.cause }),
      el("p", { class: "fix", text: a.diagnosis.fix }),
      el("p", { class: "meta", text: "alert " + a.id + " · GET /api/v1/upstreams" }));
  }

  function renderAlerts() {
    const runaway = [...state.alerts.values()].sort((a, b) =>
      (a.confidence === b.confidence ? 0 : a.confidence === "confirmed" ? -1 : 1) ||
      b.failures_in_window - a.failures_in_window);
    const cards = [...state.disk.values()].map(diskCard)
      .concat([...state.peers.values()].map(upstreamCard))
      .concat(runaway.slice(0, SHOWN).map(alertCard));
    const box = $("alerts");
    if (!cards.length) {
      box.replaceChildren(el("p", { class: "empty", text: "No alert firing." }));
    } else {
      if (runaway.length > SHOWN) {
        cards.push(el("p", { class: "empty", text: "and " + (runaway.length - SHOWN) + " more" }));
      }
      box.replaceChildren(...cards);
    }
    const total = state.alerts.size + state.disk.size + state.peers.size;
    $("firing-count").textContent = total ? "(" + total + ")" : "";
    document.title = (total ? "(" + total + ") " : "") + "retrywatch";
    const list = state.resolved.slice(0, RESOLVED_SHOWN).map((a) => el("li", {
      text: (a.mount ? "disk " + a.mount : a.peer ? "upstream " + a.peer :
        "*" + a.cid + " (pid " + a.pid + ")") +
        " resolved " + (a.resolved_at || "") + " (" + (a.resolved_reason || "") + ")" }));
    $("resolved").replaceChildren(...(list.length ? list :
      [el("li", { class: "empty", text: "None since this page opened." })]));
  }

  function row(cells) {
    return el("tr", {}, ...cells.map(([text, cls]) => el("td", { class: cls || "", text: text })));
  }

  function renderTables() {
    $("connections").tBodies[0].replaceChildren(...state.connections.map((c) => {
      const [up] = topOf(c.upstreams);
      return row([["*" + c.cid + " (pid " + c.pid + ")"], [c.source], [num(c.rate_per_second), "n"],
        [num(c.failures_in_window), "n"], [up ? up[0] : "–"], [c.client || "–"]]);
    }));
    $("upstreams").tBodies[0].replaceChildren(...state.upstreams.map((p) => row([
      [p.peer + (p.anomalous ? " ⚠" : ""), p.anomalous ? "soon" : ""],
      [num(p.failures_per_second), "n"], [num(p.connections), "n"],
      [p.failing_seconds + " s", "n"], [p.warm ? num(p.baseline_per_second) : "learning", "n"]])));
    $("sources").tBodies[0].replaceChildren(...state.sources.map((s) => {
      const g = s.growth;
      const fs = g && g.filesystem;
      const left = fs ? fs.seconds_to_full : null;
      const lag = s.lag_bytes ? bytes(s.lag_bytes) + ", " + seconds(s.lag_seconds) : "caught up";
      return row([[s.name, "wrap"], [s.kind === "file" ? lag : "–", "n"],
        [g && g.bytes_per_second !== null ? bytes(g.bytes_per_second) + "/s" : "–", "n"],
        [fs ? bytes(fs.free_bytes) : "–", "n"],
        [left === null || left === undefined ? "–" : seconds(left),
          "n" + (left !== null && left !== undefined && left < 1800 ? " soon" : "")],
        [s.last_error || "", "wrap"]]);
    }));
    $("updated").textContent = new Date().toLocaleTimeString();
  }

  function render() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    setTimeout(() => {     // a storm's changes drawn together, four times a second at most
      state.renderQueued = false;
      renderAlerts();
      renderTables();
    }, 250);
  }

  // -- reading -------------------------------------------------------------------------
  // The alerts are read only once the event stream is open, and its events are read
  // only after that: a change between the two is in the stream, applied on top of the
  // list, never lost under it.
  async function loadAlerts() {
    const [alerts, disk, peers] = await Promise.all([
      api("/api/v1/alerts?state=firing&limit=1000"), api("/api/v1/disk"),
      api("/api/v1/upstreams?limit=1")]);
    state.alerts = new Map(alerts.alerts.map((a) => [a.id, a]));
    state.disk = new Map(disk.alerts.filter((a) => a.state === "firing").map((a) => [a.id, a]));
    state.peers = new Map(peers.alerts.filter((a) => a.state === "firing").map((a) => [a.id, a]));
  }

  async function loadOthers() {
    const [connections, sources, upstreams] = await Promise.all([
      api("/api/v1/connections?limit=15"), api("/api/v1/sources"),
      api("/api/v1/upstreams?limit=20")]);
    state.connections = connections.connections;
    state.sources = sources.sources;
    state.upstreams = upstreams.peers;
  }

  function apply(event, data) {
    const a = JSON.parse(data);
    if (event === "disk_fired") state.disk.set(a.id, a);
    else if (event === "disk_resolved") { state.disk.delete(a.id); state.resolved.unshift(a); }
    else if (event === "upstream_fired") state.peers.set(a.id, a);
    else if (event === "upstream_resolved") {
      state.peers.delete(a.id);
      state.resolved.unshift(a);
    }
    else if (event === "resolved") { state.alerts.delete(a.id); state.resolved.unshift(a); }
    else if (event === "fired" || event === "updated" || event === "confirmed") {
      state.alerts.set(a.id, a);
    } else return;
    state.resolved.length = Math.min(state.resolved.length, RESOLVED_SHOWN);
    render();
  }

  async function stream() {
    const extra = { Accept: "text/event-stream" };
    if (state.lastEventId) extra["Last-Event-ID"] = state.lastEventId;
    const r = await fetch("/api/v1/alerts/stream", { headers: headers(extra), cache: "no-store" });
    if (r.status === 401) throw new Unauthorized("stream");
    if (!r.ok || !r.body) throw new Error("event stream: HTTP " + r.status);
    await loadAlerts();          // subscribed first: what changes meanwhile is in the stream
    render();
    status("live", "live");
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", event = "", data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut).replace(/\r$/, "");
        buffer = buffer.slice(cut + 1);
        if (line === "") {
          if (event === "reset") {
            await loadAlerts();  // events were missed: read the alerts again, then go on
            render();
          } else if (data.length) {
            apply(event || "message", data.join("\n"));
          }
          event = ""; data = [];
        } else if (line.startsWith(":")) {
          continue;
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
          else if (field === "id") state.lastEventId = value;
        }
      }
    }
  }

  function failed(err) {
    if (err instanceof Unauthorized) askToken();
    else status("cannot reach retrywatch", "down");
  }

  // One loop at a time; after a break it waits 1 s, doubling to 10 s, and the wait
  // starts again from 1 s only once a stream has stayed open for 30 s (a proxy that
  // closes it at once is not asked again every second).
  async function follow() {
    if (state.following) return;
    state.following = true;
    let wait = 1000;
    try {
      for (;;) {
        const opened = Date.now();
        try {
          await stream();
        } catch (err) {
          failed(err);
          if (err instanceof Unauthorized) return;
        }
        if (Date.now() - opened > 30000) wait = 1000;
        if ($("status").textContent === "live") status("reconnecting…", "down");
        await new Promise((done) => setTimeout(done, wait));
        wait = Math.min(wait * 2, 10000);
      }
    } finally {
      state.following = false;
    }
  }

  async function start() {
    $("token").hidden = true;
    try {
      await loadOthers();
    } catch (err) {
      failed(err);
      return;
    }
    render();
    follow();
  }

  let refreshing = null;
  function refreshEvery() {
    if (refreshing) return;
    refreshing = setInterval(() => {   // (the alerts: from the stream only)
      if (!$("token").hidden) return;
      loadOthers().then(render, failed);
    }, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
      $("token-input").value = "";
      start();
    });
    start();
    refreshEvery();
  });
})();
