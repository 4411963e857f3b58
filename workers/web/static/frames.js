// Microphone audio at any rate -> 16 kHz int16 frames of 20 ms, what the gateway takes.
// Shared by the capture worklet (audio through the graph) and the page's track reader.

export const RATE = 16000;
export const FRAME = 320; // 20 ms at 16 kHz

// A fractional linear resampler: the 16 kHz clock stays exact over any length whatever the
// input's rate (44.1 kHz headless, 48 kHz on most devices).
export class Frames16k {
  constructor(rate, onFrame) {
    this.rate = rate;
    this.onFrame = onFrame; // (Int16Array pcm, at, rms): at = when its last sample was taken
    this.step = rate / RATE; // input samples per output sample
    this.pos = 0; // position of the next output sample, in input samples of this block
    this.prev = 0; // last input sample of the previous block (position -1)
    this.frame = new Int16Array(FRAME);
    this.n = 0;
    this.sumsq = 0;
  }

  // One block of input: its first sample taken at t0, the next ones dt apart (any unit).
  push(input, t0, dt) {
    const len = input.length;
    if (!len) return;
    while (this.pos < len - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.prev : input[i];
      const b = i + 1 < len ? input[i + 1] : a;
      const v = Math.max(-1, Math.min(1, a + (b - a) * frac));
      this.frame[this.n++] = Math.round(v * 32767);
      this.sumsq += v * v;
      if (this.n === FRAME) {
        const pcm = this.frame;
        const rms = Math.sqrt(this.sumsq / FRAME);
        this.frame = new Int16Array(FRAME); // the full one may be transferred away
        this.n = 0;
        this.sumsq = 0;
        this.onFrame(pcm, t0 + (i + 1) * dt, rms);
      }
      this.pos += this.step;
    }
    this.pos -= len;
    this.prev = input[len - 1];
  }
}
