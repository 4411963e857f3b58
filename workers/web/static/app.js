// The page: one tab = one conversation of the "web" endpoint.
import { Audio } from "./audio.js";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
const api = (path) => `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;

const state = {
  conversationId: "",
  talking: false,
  muted: false,
  turns: new Map(), // utterance_id -> turn view
  replies: new Map(), // reply number -> {utterance_id, firstAt}
  discarded: new Set(), // generations thrown away
  resumed: new Set(), // utterances a later one resumed: a pause, not a turn of their own
};
// Read by the tests and the benchmark.
window.voicebus = { state, turns: [], events: [] };

// The meter follows the loudest frame of each ~100 ms: redrawn at 10 Hz, not at the 50 Hz
// of the frames (each redraw is a style, layout and paint the browser's CPU pays for,
// on a small machine beside the models).
let levelPeak = 0;
let levelFrames = 0;
function showLevel(rms) {
  levelPeak = Math.max(levelPeak, rms);
  if (++levelFrames < 5) return;
  const value = Math.min(1, levelPeak * 4);
  if (Math.abs(value - $("level").value) > 0.01) $("level").value = value;
  levelPeak = 0;
  levelFrames = 0;
}

// Frames go up one by one (20 ms) while the user may be speaking and until the gateway has
// decided the turn; while all is quiet with no utterance open (waiting for the reply,
// listening to a silent room) they go five to a message: ten messages a second instead of
// fifty, which on a small machine is CPU (the browser's and the gateway's) left to the
// models the reply waits for. A loud frame sends what is held at once, so an onset (a
// barge-in) is not held back; a soft one the gateway hears switches frames back too.
const QUIET_RMS = 0.003; // about -50 dBFS: noise-suppressed silence is far below it
const HOLD_FRAMES = 5;
const LIVE_MS = 1000; // a loud sound that starts no utterance keeps frames live this long
const uplink = { held: [], heldAt: 0, live: false, open: null, loudAt: -Infinity };

function sendFrame(pcm, at, rms) {
  if (rms >= QUIET_RMS) {
    uplink.live = true;
    uplink.loudAt = at;
  } else if (uplink.live && uplink.open === null && at - uplink.loudAt > LIVE_MS) {
    uplink.live = false;
  }
  uplink.held.push(pcm);
  uplink.heldAt = at;
  if (uplink.live || uplink.held.length >= HOLD_FRAMES) flushFrames();
}

// Sends the frames held as one message: the time of its last sample, then the frames.
function flushFrames() {
  const frames = uplink.held;
  if (!frames.length || !ws || ws.readyState !== WebSocket.OPEN) return;
  const bytes = frames[0].byteLength;
  const msg = new ArrayBuffer(8 + bytes * frames.length);
  new DataView(msg).setFloat64(0, uplink.heldAt, true);
  frames.forEach((f, i) => new Int16Array(msg, 8 + i * bytes).set(f));
  uplink.held = [];
  ws.send(msg);
}

const audio = new Audio({
  onFrame(pcm, at, rms) {
    showLevel(rms);
    if (!state.talking || !ws || ws.readyState !== WebSocket.OPEN) return;
    if (state.muted) pcm.fill(0); // keep the clock going: an utterance in progress ends
    sendFrame(pcm, at, state.muted ? 0 : rms);
  },
  onPlayed(reply, samples) {
    send({ type: "played", reply, samples });
  },
  onFirst(reply, atMs) {
    const r = state.replies.get(reply);
    if (!r || state.resumed.has(r.utterance_id)) return;
    r.firstAt = atMs;
    const t = turn(r.utterance_id);
    t.firstHeardAt = atMs;
    showV2V(t);
  },
});
window.voicebus.audio = audio;

// -- the socket --------------------------------------------------------------------------

let ws = null;
function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?token=${encodeURIComponent(token)}`;
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => (typeof e.data === "string" ? onMessage(JSON.parse(e.data)) : onAudio(e.data));
  ws.onclose = () => setStatus("disconnected: reload the page");
}
function send(m) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
}

function onAudio(buf) {
  const reply = new DataView(buf).getUint32(0, true);
  audio.push(reply, new Int16Array(buf, 4));
}

function onMessage(m) {
  switch (m.type) {
    case "hello":
      state.conversationId = m.conversation_id;
      $("cid").textContent = `${m.conversation_id} (web:${m.session})`;
      window.voicebus.ready = true;
      break;
    case "reply-open":
      state.replies.set(m.reply, { utterance_id: m.utterance_id, firstAt: null });
      audio.open(m.reply, m.rate);
      break;
    case "reply-halt":
      audio.halt(m.reply);
      break;
    case "reply-end":
      audio.end(m.reply);
      break;
    case "event":
      onEvent(m.event);
      break;
    case "turn":
      showWaterfall(m.turn);
      break;
    case "error":
      setStatus(`error: ${m.message}`);
      break;
  }
}

// -- events -> the conversation ------------------------------------------------------------

function turn(uid) {
  let t = state.turns.get(uid);
  if (t) return t;
  const li = document.createElement("li");
  li.className = "turn";
  li.dataset.utterance = uid;
  li.innerHTML = `<div class="you">You: <span class="final"></span><span class="partial"></span></div>
    <div class="assistant">Assistant: <span class="reply"></span></div>
    <div class="v2v"></div><div class="waterfall" aria-label="Latency waterfall"></div>`;
  $("turns").appendChild(li);
  t = { uid, li, sentences: new Map(), speechEndAt: null, firstHeardAt: null, cut: null };
  state.turns.set(uid, t);
  return t;
}

window.voicebus.onEvent = (e) => onEvent(e); // the tests feed it events of their own
function onEvent(e) {
  window.voicebus.events.push(e);
  if (e.type === "control.error" && !state.turns.has(e.utterance_id)) return;
  if (state.resumed.has(e.utterance_id)) return; // its answer, if any, is stopped
  if (e.type === "mic.voice-started" && e.resumes) {
    // The user went on after a pause: the cut turn is part of this one, which holds the
    // whole sentence and gets the answer.
    state.resumed.add(e.resumes);
    const cut = state.turns.get(e.resumes);
    if (cut) cut.li.remove();
    state.turns.delete(e.resumes);
  }
  const t = turn(e.utterance_id);
  const q = (sel) => t.li.querySelector(sel);
  switch (e.type) {
    case "mic.voice-started":
      uplink.open = e.utterance_id;
      uplink.live = true;
      setStatus("listening…");
      break;
    case "mic.voice-stopped":
      if (uplink.open === e.utterance_id) {
        uplink.open = null;
        uplink.live = false; // the turn is decided: quiet frames may wait now
      }
      t.speechEndAt = e.speech_end_ts * 1000;
      setStatus("thinking…");
      break;
    case "stt.transcript-partial":
      if (!q(".final").textContent) q(".partial").textContent = e.text;
      break;
    case "stt.transcript":
      if (!e.speculative) {
        q(".final").textContent = e.text;
        q(".partial").textContent = "";
      } else if (!q(".final").textContent) {
        q(".partial").textContent = e.text;
      }
      break;
    case "llm.reply-discarded":
      state.discarded.add(e.generation);
      for (const [k, s] of t.sentences) if (s.generation === e.generation) t.sentences.delete(k);
      renderReply(t);
      audio.rest(); // its sentence woke the graph for nothing
      break;
    case "llm.reply-sentence":
      audio.wake(); // its audio follows (the graph may be resting between replies)
      if (state.discarded.has(e.generation) || t.cut) break;
      t.sentences.set(`${e.generation}/${e.index}`, { generation: e.generation, index: e.index, text: e.text });
      renderReply(t);
      break;
    case "speaker.playback-started":
      setStatus("speaking…");
      break;
    case "speaker.playback-done":
      if (e.interrupted) {
        // Cut to what was heard: the sentences heard to the end, and the one cut off.
        t.cut = { heard: e.sentences_heard, last: e.last_sentence_index };
        for (const [k, s] of t.sentences) if (s.generation === e.generation && s.index > e.last_sentence_index) t.sentences.delete(k);
        renderReply(t);
      }
      t.playedMs = e.played_ms;
      setStatus(state.talking ? "listening" : "press Talk");
      break;
    case "control.error":
      q(".v2v").textContent = `error: ${e.message}`;
      break;
  }
}

function renderReply(t) {
  const span = t.li.querySelector(".reply");
  span.textContent = "";
  const list = [...t.sentences.values()].sort((a, b) => a.index - b.index);
  for (const s of list) {
    const el = document.createElement("span");
    el.className = "sentence";
    if (t.cut && s.index === t.cut.last && t.cut.heard <= s.index) el.classList.add("cut");
    el.textContent = s.text + " ";
    span.appendChild(el);
  }
}

function showV2V(t) {
  if (t.speechEndAt == null || t.firstHeardAt == null) return;
  t.browserV2V = Math.round(t.firstHeardAt - t.speechEndAt);
  t.li.querySelector(".v2v").textContent = `voice-to-voice in this browser: ${t.browserV2V} ms`;
  window.voicebus.turns.push({ utterance_id: t.uid, browser_v2v_ms: t.browserV2V });
}

function showWaterfall(w) {
  if (state.resumed.has(w.utterance_id)) return;
  const t = turn(w.utterance_id);
  t.waterfall = w;
  const box = t.li.querySelector(".waterfall");
  box.innerHTML = "";
  box.appendChild(bars(w));
  const v = w.timings_ms.voice_to_voice;
  if (v != null) {
    const line = document.createElement("div");
    line.className = "total";
    line.textContent = `voice-to-voice (event log): ${Math.round(v)} ms`;
    box.appendChild(line);
  }
  const link = document.createElement("a");
  link.className = "trace";
  if (w.jaeger_url) {
    link.href = w.jaeger_url;
    link.textContent = "trace in Jaeger";
  } else {
    link.href = api(`/api/conversations/${state.conversationId}/trace.json`);
    link.textContent = "trace (Jaeger JSON)";
    link.download = "";
  }
  box.appendChild(link);
}

export function bars(w) {
  const frag = document.createDocumentFragment();
  const end = Math.max(1, ...w.stages.map((s) => s.start_ms + s.duration_ms));
  for (const s of w.stages) {
    const row = document.createElement("div");
    row.className = s.name === "voice-to-voice" ? "row felt" : "row";
    row.dataset.stage = s.name;
    const left = (100 * s.start_ms) / end;
    const width = (100 * s.duration_ms) / end;
    const mark = s.mark_ms == null ? "" : `<span class="mark" title="${s.mark_label}" style="left:${(100 * s.mark_ms) / end}%"></span>`;
    row.innerHTML = `<span>${s.name}</span><span class="track"><span class="bar" style="left:${left}%;width:${width}%"></span>${mark}</span><span>${Math.round(s.start_ms)} +${Math.round(s.duration_ms)} ms</span>`;
    frag.appendChild(row);
  }
  return frag;
}

// -- controls -----------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

$("talk").addEventListener("click", async () => {
  if (!state.talking) {
    try {
      await audio.openMic();
    } catch (err) {
      setStatus(`microphone: ${err.message}`);
      return;
    }
    state.talking = true;
    $("mute").disabled = false;
    setStatus("listening");
  } else {
    state.talking = false;
    audio.closeMic();
    flushFrames();
    send({ type: "talk-stopped" });
    $("mute").disabled = true;
    setStatus("press Talk");
  }
  $("talk").setAttribute("aria-pressed", String(state.talking));
});

$("mute").addEventListener("click", () => {
  state.muted = !state.muted;
  $("mute").setAttribute("aria-pressed", String(state.muted));
});

// -- recorded conversations ------------------------------------------------------------------

async function loadConversations() {
  const r = await fetch(api("/api/conversations"));
  if (!r.ok) return;
  const { conversations } = await r.json();
  const ul = $("conversations");
  ul.innerHTML = "";
  for (const c of conversations) {
    const li = document.createElement("li");
    li.dataset.conversation = c.conversation_id;
    const when = new Date(c.started_at * 1000).toLocaleString();
    const v2v = c.voice_to_voice_ms == null ? "" : ` · ${Math.round(c.voice_to_voice_ms)} ms`;
    li.innerHTML = `<div><b></b> <small></small></div>
      <button class="replay">Replay</button> <a class="trace" download>Trace</a>`;
    li.querySelector("b").textContent = c.first_words || "(no speech)";
    li.querySelector("small").textContent = `${c.endpoint || "?"} · ${when} · ${c.turns} turns${v2v}`;
    li.querySelector(".trace").href = api(`/api/conversations/${c.conversation_id}/trace.json`);
    li.querySelector(".replay").addEventListener("click", () => replay(c.conversation_id));
    ul.appendChild(li);
  }
  window.voicebus.conversations = conversations;
}

async function replay(cid) {
  const el = $("replay");
  el.src = api(`/api/conversations/${cid}/heard.wav`);
  el.dataset.conversation = cid;
  await el.play().catch((err) => setStatus(`replay: ${err.message}`));
}

$("refresh").addEventListener("click", loadConversations);
connect();
loadConversations();
