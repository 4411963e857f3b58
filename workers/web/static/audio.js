// The page's audio: microphone -> frames; replies -> player -> tap -> speakers.
//
// Where the browser has MediaStreamTrackProcessor (Chromium), the microphone is read off its
// track and the graph only plays replies: between replies it is suspended. A running graph
// wakes every render quantum (2.9 ms) in the page and in the browser's audio service even
// when it plays silence, and on a small machine that CPU is taken from the models the reply
// waits for. Elsewhere the microphone goes through a capture worklet and the graph runs.
import { Frames16k } from "./frames.js";

// How long the graph keeps running after the last reply ended before it is suspended.
const REST_MS = 1000;
// A device that takes longer than this to start again (some Bluetooth headsets) would delay
// the reply's first sound: the graph then stays running.
const SLOW_RESUME_MS = 50;

// The output buffer the page asks for: by default the smallest the device allows (a reply's
// first sound is heard that much sooner: headless Chromium reports 2.9 + 8 ms with 0 against
// 10 + 32 ms with "interactive"). `?latency=interactive` (or balanced, playback, or seconds)
// in the page's URL trades that back for a larger cushion against crackles on a busy machine.
function latencyHint() {
  const asked = new URLSearchParams(location.search).get("latency");
  if (!asked) return 0;
  const seconds = Number(asked);
  return Number.isFinite(seconds) ? seconds : asked;
}

export class Audio {
  constructor({ onFrame, onPlayed, onFirst }) {
    this.onFrame = onFrame;
    this.onPlayed = onPlayed;
    this.onFirst = onFirst;
    this.ctx = null;
    this.heard = [];
    // Replies stopped by a barge-in: {reply, samples, at (context time), atMs (when the stop
    // was heard, wall clock)}.
    this.halts = [];
    this.inputLatencyMs = 0;
    this.replying = new Set(); // replies opened and not yet played out or halted
    this.offGraph = false; // the microphone is read off its track: the graph may rest
    this.restTimer = null;
    this.restful = new URLSearchParams(location.search).get("rest") !== "off";
    this.resumeMs = null; // how long the graph last took to start again
  }

  async start() {
    if (this.ctx) return;
    this.ctx = new AudioContext({ latencyHint: latencyHint() });
    await this.ctx.audioWorklet.addModule(new URL("./worklets.js", import.meta.url));
    this.player = new AudioWorkletNode(this.ctx, "voicebus-player", { outputChannelCount: [1] });
    this.tap = new AudioWorkletNode(this.ctx, "voicebus-tap", { outputChannelCount: [1] });
    this.player.connect(this.tap).connect(this.ctx.destination);
    this.player.port.onmessage = (e) => {
      const m = e.data;
      if (m.first !== undefined) this.onFirst(m.first, this.wallMs(m.at));
      else if (m.played !== undefined) {
        this.onPlayed(m.played, m.samples);
        if (m.done) this.finished(m.played);
      } else if (m.halted !== undefined) {
        const halt = { reply: m.halted, samples: m.samples, at: m.at, atMs: this.wallMs(m.at) };
        this.halts.push(halt);
        this.onPlayed(m.halted, m.samples);
        this.finished(m.halted);
      }
    };
    this.tap.port.onmessage = (e) => this.heard.push(e.data);
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  // A reply is coming: the graph runs. The page calls this when the reply's first sentence
  // is shown: its audio follows after the tts's first synthesis (100-200 ms here), ample for the
  // resume (a few ms), and the graph stays quiet while the llm writes that sentence. Audio
  // that comes to a resting graph wakes it too.
  wake() {
    clearTimeout(this.restTimer);
    this.restTimer = null;
    if (!this.ctx || this.ctx.state !== "suspended") return;
    const t0 = performance.now();
    this.ctx.resume().then(() => {
      this.resumeMs = performance.now() - t0;
      if (this.resumeMs > SLOW_RESUME_MS) this.restful = false;
    });
  }

  // Nothing to play: suspend the graph a little later, unless a reply comes first, the
  // graph carries the microphone, or the device is slow to start again.
  rest() {
    if (!this.ctx || !this.offGraph || !this.restful || this.replying.size || this.restTimer) return;
    this.restTimer = setTimeout(() => {
      this.restTimer = null;
      if (this.replying.size || !this.restful || this.ctx.state !== "running") return;
      // A reply opened while the suspension was under way found the graph still running
      // (wake did nothing): it is woken once the suspension is done.
      this.ctx.suspend().then(() => {
        if (this.replying.size) this.wake();
      });
    }, REST_MS);
  }

  finished(reply) {
    this.replying.delete(reply);
    this.rest();
  }

  // When the sample the graph renders at context time `ctxTime` is heard, as wall-clock
  // milliseconds (the clock the gateway stamps events with). getOutputTimestamp() pairs the
  // position the output device is playing with its time, so the device's latency is in it
  // already: adding outputLatency again would count it twice.
  wallMs(ctxTime) {
    const ts = this.ctx.getOutputTimestamp();
    return performance.timeOrigin + ts.performanceTime + (ctxTime - ts.contextTime) * 1000;
  }

  // When a microphone sample that the graph processes at context time `ctxTime` was spoken,
  // as wall-clock milliseconds: the render clock (currentTime now) runs ahead of what the
  // device plays by baseLatency + outputLatency, so the output mapping above would stamp it
  // that much late; and the input device held it for its own latency before the graph got it.
  capturedMs(ctxTime) {
    return performance.timeOrigin + performance.now() + (ctxTime - this.ctx.currentTime) * 1000 - this.inputLatencyMs;
  }

  async openMic() {
    await this.start();
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const track = this.stream.getAudioTracks()[0];
    this.inputLatencyMs = ((track && track.getSettings().latency) || 0) * 1000;
    const onGraph = new URLSearchParams(location.search).get("capture") === "graph";
    if (typeof MediaStreamTrackProcessor === "function" && !onGraph) {
      this.offGraph = true;
      this.readTrack(track);
      this.rest();
      return;
    }
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(this.ctx, "voicebus-capture", { numberOfOutputs: 0 });
    this.capture.port.onmessage = (e) => {
      this.onFrame(new Int16Array(e.data.pcm), this.capturedMs(e.data.at), e.data.rms);
    };
    this.source.connect(this.capture);
  }

  // The microphone's buffers (10 ms in Chromium) as they come, off the audio graph.
  async readTrack(track) {
    const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    this.reader = reader;
    let frames = null;
    let x = new Float32Array(0);
    for (;;) {
      let got;
      try {
        got = await reader.read();
      } catch {
        return; // the track was stopped
      }
      const data = got.value;
      if (got.done || !data) return;
      try {
        const rate = data.sampleRate;
        if (!frames || frames.rate !== rate) frames = new Frames16k(rate, (pcm, at, rms) => this.onFrame(pcm, at, rms));
        if (x.length !== data.numberOfFrames) x = new Float32Array(data.numberOfFrames);
        data.copyTo(x, { planeIndex: 0, format: "f32-planar" });
        // The timestamp (microseconds, the page's clock) is when the browser got the buffer:
        // the input device took its reported latency to deliver it, so the first sample was
        // spoken that long before (within 2 ms of what the graph's clock gives).
        const t0 = performance.timeOrigin + data.timestamp / 1000 - this.inputLatencyMs;
        this.mixInjected(x, rate, t0);
        frames.push(x, t0, 1000 / rate);
      } finally {
        data.close();
      }
    }
  }

  closeMic() {
    if (this.reader) this.reader.cancel().catch(() => {});
    if (this.source) this.source.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.source = this.stream = this.capture = this.reader = null;
  }

  open(reply, rate) {
    this.replying.add(reply);
    this.player.port.postMessage({ open: reply, rate });
  }
  push(reply, int16) {
    this.wake(); // audio that comes to a resting graph (its sentence missed) wakes it
    const f = new Float32Array(int16.length);
    for (let i = 0; i < int16.length; i++) f[i] = int16[i] / 32768;
    this.player.port.postMessage({ push: reply, pcm: f }, [f.buffer]);
  }
  halt(reply) { this.player.port.postMessage({ halt: reply }); }
  end(reply) { this.player.port.postMessage({ end: reply }); }

  // Speaks `int16` (at `rate`) into the capture path as the microphone would (the tests talk
  // over a reply with it). Resolves to when its first sample was "spoken" (wall clock, ms).
  inject(int16, rate) {
    const f = Float32Array.from(int16, (v) => v / 32768);
    if (this.offGraph) {
      return new Promise((resolve) => {
        this.injected = { pcm: f, rate, pos: 0, resolve };
      });
    }
    const buf = this.ctx.createBuffer(1, f.length, rate);
    buf.getChannelData(0).set(f);
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.capture);
    const at = this.ctx.currentTime + 0.05;
    src.start(at);
    return Promise.resolve(this.capturedMs(at) + this.inputLatencyMs);
  }

  // Adds what inject() was given to the microphone's samples (resampled linearly to its rate).
  mixInjected(x, rate, t0) {
    const j = this.injected;
    if (!j) return;
    if (j.resolve) {
      j.resolve(t0); // its first sample is this buffer's first
      j.resolve = null;
    }
    const step = j.rate / rate;
    for (let i = 0; i < x.length; i++, j.pos += step) {
      const k = Math.floor(j.pos);
      if (k + 1 >= j.pcm.length) {
        this.injected = null;
        return;
      }
      x[i] += j.pcm[k] + (j.pcm[k + 1] - j.pcm[k]) * (j.pos - k);
    }
  }

  record(on) { this.heard = []; this.tap.port.postMessage({ record: on }); }
  // What the speakers got since record(true), as int16 at the context's rate.
  recorded() {
    const n = this.heard.reduce((a, b) => a + b.length, 0);
    const out = new Int16Array(n);
    let o = 0;
    for (const b of this.heard) for (let i = 0; i < b.length; i++) out[o++] = Math.max(-32768, Math.min(32767, Math.round(b[i] * 32767)));
    return { rate: this.ctx.sampleRate, pcm: out };
  }

  // The same as base64 of little-endian int16 (compact for the tests to fetch).
  recordedBase64() {
    const { rate, pcm } = this.recorded();
    const bytes = new Uint8Array(pcm.buffer);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { rate, b64: btoa(s) };
  }
}
