// Sound in the page: one AudioContext (created on a user gesture, so autoplay rules allow it)
// for the level meters of both directions and the ring tone, plus the microphone and speaker
// lists. Calls' remote audio itself plays through the <audio> element (volume, setSinkId).

/** Level of a signal as 0..1 on a -60..0 dBFS scale (what a meter shows). */
export function meterScale(rms) {
  if (!(rms > 0)) return 0;
  const db = 20 * Math.log10(rms);
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

export class AudioEngine {
  constructor() {
    this.ctx = null;
    this.ringTimer = null;
    this.ringNodes = [];
  }

  /** Creates or resumes the AudioContext; call from a click/keypress handler. */
  unlock() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    if (!this.ctx) this.ctx = new Ctx();
    if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
    return this.ctx;
  }

  /**
   * A meter on a MediaStream: `read()` returns the RMS (0..1) of the last ~40 ms.
   * Returns null when the stream has no audio track or there is no AudioContext.
   */
  meter(stream) {
    const ctx = this.unlock();
    if (!ctx || !stream || !stream.getAudioTracks().length) return null;
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    return {
      read() {
        analyser.getFloatTimeDomainData(buf);
        let sum = 0;
        for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
        return Math.sqrt(sum / buf.length);
      },
      close() {
        try { source.disconnect(); analyser.disconnect(); } catch (_) { /* already gone */ }
      },
    };
  }

  /** Plays the ring tone (440+480 Hz, 2 s on, 4 s off, as in North America) until stopRing(). */
  startRing() {
    const ctx = this.unlock();
    if (!ctx || this.ringTimer) return;
    const burst = () => {
      const gain = ctx.createGain();
      gain.gain.value = 0;
      gain.connect(ctx.destination);
      const t = ctx.currentTime;
      gain.gain.setValueAtTime(0, t);
      gain.gain.linearRampToValueAtTime(0.12, t + 0.02);
      gain.gain.setValueAtTime(0.12, t + 1.98);
      gain.gain.linearRampToValueAtTime(0, t + 2);
      const oscs = [440, 480].map((hz) => {
        const o = ctx.createOscillator();
        o.frequency.value = hz;
        o.connect(gain);
        o.start(t);
        o.stop(t + 2.05);
        return o;
      });
      this.ringNodes = [gain, ...oscs];
    };
    burst();
    this.ringTimer = setInterval(burst, 6000);
  }

  stopRing() {
    clearInterval(this.ringTimer);
    this.ringTimer = null;
    for (const n of this.ringNodes) {
      try { if (n.stop) n.stop(); n.disconnect(); } catch (_) { /* already stopped */ }
    }
    this.ringNodes = [];
  }

  /** A short beep for a DTMF key press, so the user hears what they sent. */
  click() {
    const ctx = this.ctx;
    if (!ctx || ctx.state !== "running") return;
    const o = ctx.createOscillator();
    const g = ctx.createGain();
    o.frequency.value = 1200;
    g.gain.value = 0.04;
    o.connect(g).connect(ctx.destination);
    o.start();
    o.stop(ctx.currentTime + 0.06);
  }
}

/**
 * Microphones and speakers: {mics: [{id, label}], speakers: [...], canPickSpeaker}. Labels
 * are empty until the page has had microphone permission once (browsers hide them before).
 */
export async function listDevices() {
  const canPickSpeaker = typeof HTMLMediaElement !== "undefined" && "setSinkId" in HTMLMediaElement.prototype;
  if (!navigator.mediaDevices?.enumerateDevices) return { mics: [], speakers: [], canPickSpeaker: false };
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  const pick = (kind, word) => devices
    .filter((d) => d.kind === kind && d.deviceId)
    .map((d, i) => ({ id: d.deviceId, label: d.label || `${word} ${i + 1}` }));
  return { mics: pick("audioinput", "Microphone"), speakers: pick("audiooutput", "Speaker"), canPickSpeaker };
}
