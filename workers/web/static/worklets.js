// AudioWorklet processors of the page (one module): capture, player and tap.

import { Frames16k } from "./frames.js";

// Microphone -> 16 kHz int16 frames of 20 ms, stamped with the graph's time (browsers
// without MediaStreamTrackProcessor read the microphone through the graph).
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frames = new Frames16k(sampleRate, (pcm, at, rms) => {
      this.port.postMessage({ pcm: pcm.buffer, at, rms }, [pcm.buffer]);
    });
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) this.frames.push(input, currentTime, 1 / sampleRate);
    return true;
  }
}

// Reply audio at its own rate, resampled on the fly; counts exactly how many of the reply's
// samples have been played, which is what the gateway reports as heard.
class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.replies = []; // in play order
    this.sinceReport = 0;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  find(id) {
    return this.replies.find((r) => r.id === id);
  }

  onMessage(m) {
    if (m.open !== undefined) {
      this.replies.push({ id: m.open, step: m.rate / sampleRate, buf: new Float32Array(m.rate * 4), total: 0, pos: 0, played: 0, reported: -1, ended: false, first: false });
    } else if (m.push !== undefined) {
      const r = this.find(m.push);
      if (!r) return;
      const pcm = m.pcm;
      if (r.total + pcm.length > r.buf.length) {
        const bigger = new Float32Array(Math.max(r.buf.length * 2, r.total + pcm.length));
        bigger.set(r.buf.subarray(0, r.total));
        r.buf = bigger;
      }
      r.buf.set(pcm, r.total);
      r.total += pcm.length;
    } else if (m.halt !== undefined) {
      const r = this.find(m.halt);
      if (r) this.port.postMessage({ halted: r.id, samples: r.played, at: currentTime });
      this.replies = this.replies.filter((x) => x.id !== m.halt);
    } else if (m.end !== undefined) {
      const r = this.find(m.end);
      if (r) r.ended = true;
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    out.fill(0);
    let i = 0;
    while (i < out.length && this.replies.length) {
      const r = this.replies[0];
      while (i < out.length) {
        const idx = Math.floor(r.pos);
        if (idx >= r.total) break; // underrun: silence until more comes
        const a = r.buf[idx];
        const b = idx + 1 < r.total ? r.buf[idx + 1] : a;
        if (!r.first) {
          r.first = true;
          this.port.postMessage({ first: r.id, at: currentTime + i / sampleRate });
        }
        out[i++] = a + (b - a) * (r.pos - idx);
        r.pos += r.step;
        r.played = Math.min(r.total, idx + 1);
      }
      if (r.ended && r.played >= r.total) {
        this.port.postMessage({ played: r.id, samples: r.played, done: true });
        this.replies.shift();
      } else {
        break;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    // Report about every 10 ms (and at once when a reply is fully played).
    this.sinceReport += out.length;
    const r = this.replies[0];
    if (r && r.played !== r.reported && (this.sinceReport >= sampleRate / 100 || r.played >= r.total)) {
      r.reported = r.played;
      this.sinceReport = 0;
      this.port.postMessage({ played: r.id, samples: r.played });
    }
    return true;
  }
}

// Just before the speakers: passes audio through and, when asked, records exactly what was
// played (the tests transcribe it).
class Tap extends AudioWorkletProcessor {
  constructor() {
    super();
    this.recording = false;
    this.port.onmessage = (e) => {
      this.recording = !!e.data.record;
    };
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    const out = outputs[0];
    for (let c = 0; c < out.length; c++) {
      if (input) out[c].set(input);
      else out[c].fill(0);
    }
    if (this.recording && input) this.port.postMessage(input.slice(0));
    return true;
  }
}

registerProcessor("voicebus-capture", Capture);
registerProcessor("voicebus-player", Player);
registerProcessor("voicebus-tap", Tap);
