// The dashboard's shared connection to the swarm's event stream: a SharedWorker that every
// open page of this origin joins, so the browser holds one `GET /v1/events` stream however
// many tabs are open. Browsers allow six HTTP/1.1 connections per host; a stream per page
// would leave none for the pages' own requests once six pages are open.
//
// A page joins with the sequence number its content was read at and the event types it
// follows; it leaves on `pagehide` (closed, or put in the back/forward cache) and joins again
// on `pageshow`. The stream runs while at least one page is joined. Each event goes to every
// joined page as {kind: "event", type, seq, data}; a page drops those it has already seen.
// A page that joins a stream which is past its sequence number is told so ({kind: "joined",
// seq}) and reads its content again, since it missed the events in between.
"use strict";

const ports = new Set();
const types = new Set();
let source = null;
let lastSeq = 0;
let state = { kind: "state", live: false, text: "connecting…" };

function broadcast(message) {
  for (const port of ports) port.postMessage(message);
}

function setState(live, text) {
  state = { kind: "state", live, text };
  broadcast(state);
}

function listen(type) {
  source.addEventListener(type, (e) => {
    const seq = Number(e.lastEventId) || 0;
    if (seq > lastSeq) lastSeq = seq;
    broadcast({ kind: "event", type, seq, data: e.data });
  });
}

function open() {
  source = new EventSource("/v1/events?after=" + encodeURIComponent(String(lastSeq)));
  source.onopen = () => setState(true, "live");
  // The browser reconnects by itself (with Last-Event-ID) unless the server refused the
  // stream; then the next page to join opens it again.
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) setState(false, "disconnected");
    else setState(false, "reconnecting…");
  };
  for (const type of types) listen(type);
}

function close() {
  if (source) source.close();
  source = null;
  state = { kind: "state", live: false, text: "connecting…" };
}

function join(port, message) {
  const after = Number(message.after) || 0;
  // A stream nobody follows starts where the joining page's content was read.
  if (ports.size === 0) { close(); lastSeq = after; }
  ports.add(port);
  for (const type of message.types || []) {
    if (types.has(type)) continue;
    types.add(type);
    if (source) listen(type);
  }
  if (!source || source.readyState === EventSource.CLOSED) open();
  port.postMessage({ kind: "joined", seq: lastSeq });
  port.postMessage(state);
}

function leave(port) {
  ports.delete(port);
  if (ports.size === 0) close();
}

self.onconnect = (e) => {
  const port = e.ports[0];
  port.onmessage = (m) => {
    const message = m.data || {};
    if (message.op === "join") join(port, message);
    else if (message.op === "leave") leave(port);
  };
  port.start();
};
