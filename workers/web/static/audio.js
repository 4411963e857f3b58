// The page's audio: microphone -> capture worklet -> frames; replies -> player -> tap -> speakers.

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
    this.halts = []; // {reply, samples, at (context time)} of replies stopped by a barge-in
    this.inputLatencyMs = 0;
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
      else if (m.played !== undefined) this.onPlayed(m.played, m.samples);
      else if (m.halted !== undefined) {
        this.halts.push({ reply: m.halted, samples: m.samples, at: m.at });
        this.onPlayed(m.halted, m.samples);
      }
    };
    this.tap.port.onmessage = (e) => this.heard.push(e.data);
    if (this.ctx.state !== "running") await this.ctx.resume();
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
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(this.ctx, "voicebus-capture", { numberOfOutputs: 0 });
    this.capture.port.onmessage = (e) => {
      this.onFrame(new Int16Array(e.data.pcm), this.capturedMs(e.data.at), e.data.rms);
    };
    this.source.connect(this.capture);
  }

  closeMic() {
    if (this.source) this.source.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.source = this.stream = this.capture = null;
  }

  open(reply, rate) { this.player.port.postMessage({ open: reply, rate }); }
  push(reply, int16) {
    const f = new Float32Array(int16.length);
    for (let i = 0; i < int16.length; i++) f[i] = int16[i] / 32768;
    this.player.port.postMessage({ push: reply, pcm: f }, [f.buffer]);
  }
  halt(reply) { this.player.port.postMessage({ halt: reply }); }
  end(reply) { this.player.port.postMessage({ end: reply }); }

  // Speaks `int16` (at `rate`) into the capture path as the microphone would, starting at the
  // returned context time (the tests talk over a reply with it).
  inject(int16, rate) {
    const buf = this.ctx.createBuffer(1, int16.length, rate);
    const ch = buf.getChannelData(0);
    for (let i = 0; i < int16.length; i++) ch[i] = int16[i] / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.capture);
    const at = this.ctx.currentTime + 0.05;
    src.start(at);
    return at;
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
