// The page's audio: microphone -> capture worklet -> frames; replies -> player -> tap -> speakers.

export class Audio {
  constructor({ onFrame, onPlayed, onFirst }) {
    this.onFrame = onFrame;
    this.onPlayed = onPlayed;
    this.onFirst = onFirst;
    this.ctx = null;
    this.heard = [];
    this.halts = []; // {reply, samples, at (context time)} of replies stopped by a barge-in
  }

  async start() {
    if (this.ctx) return;
    this.ctx = new AudioContext();
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

  // A context time as wall-clock milliseconds (the clock the gateway stamps events with).
  wallMs(ctxTime) {
    const ts = this.ctx.getOutputTimestamp();
    const latency = (this.ctx.outputLatency || 0) * 1000;
    return performance.timeOrigin + ts.performanceTime + (ctxTime - ts.contextTime) * 1000 + latency;
  }

  async openMic() {
    await this.start();
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    this.source = this.ctx.createMediaStreamSource(this.stream);
    this.capture = new AudioWorkletNode(this.ctx, "voicebus-capture", { numberOfOutputs: 0 });
    this.capture.port.onmessage = (e) => {
      const ts = this.ctx.getOutputTimestamp();
      const at = performance.timeOrigin + ts.performanceTime + (e.data.at - ts.contextTime) * 1000;
      this.onFrame(new Int16Array(e.data.pcm), at, e.data.rms);
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
