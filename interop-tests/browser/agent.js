// One API over SIP.js 0.21 (window.SIP) and JsSIP 3.13 (window.JsSIP) for the interop harness.
//
//   const a = makeAgent({stack: 'sipjs' | 'jssip', wsUrl, uri, username, password, iceServers});
//   await a.register();            // resolves when registered; rejects with "REGISTER failed: 401 ..."
//   await a.call('sip:1002@dom');  // resolves when the call is established
//   await a.waitIncoming();        // resolves with {from, requestUri} when an INVITE arrives
//   await a.answer();              // resolves when the answered call is established
//   await a.stats();               // inbound/outbound RTP audio stats, see `collectStats`
//   await a.hold(true|false);      // hold / resume by re-INVITE
//   await a.dtmf('1234#', {duration: 200, gap: 100, via: 'rfc4733' | 'info'});
//   await a.hangup(); await a.waitEnded();
//   await a.unregister(); a.isRegistered(); await a.stop();
//
// Every method works on the agent's single current call. Timeouts are the caller's business
// (run.mjs wraps every step). Everything is logged to the console ([agent], [sipjs], [jssip]):
// run.mjs keeps it and prints it only when something fails.
(function () {
  "use strict";

  const log = (line) => console.log(`[agent] ${line}`);

  // Echo cancellation, noise suppression and gain control off: otherwise measured audio levels
  // swing by two orders of magnitude between runs.
  const AUDIO_CONSTRAINTS = {
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    video: false,
  };

  function deferred() {
    let resolve, reject;
    const promise = new Promise((a, b) => { resolve = a; reject = b; });
    promise.catch(() => {}); // a waiter may never come; do not report unhandled rejections
    return { promise, resolve, reject, settled: false };
  }
  function settle(d, ok, value) {
    if (!d || d.settled) return;
    d.settled = true;
    ok ? d.resolve(value) : d.reject(value);
  }

  // ---------------------------------------------------------------------------------------
  // Media: play the remote audio and analyse it (level and dominant frequency).
  // ---------------------------------------------------------------------------------------
  class RemoteAudio {
    constructor(pc, label) {
      this.stream = new MediaStream();
      for (const r of pc.getReceivers()) {
        if (r.track && r.track.kind === "audio") this.stream.addTrack(r.track);
      }
      // Chromium only pulls decoded remote audio through WebAudio when a media element plays it.
      this.el = document.createElement("audio");
      this.el.autoplay = true;
      this.el.srcObject = this.stream;
      this.el.title = label;
      (document.getElementById("media") || document.body).appendChild(this.el);
      this.el.play().catch((e) => log(`agent: audio.play() failed: ${e}`));
      try {
        this.ctx = new AudioContext();
        this.analyser = this.ctx.createAnalyser();
        this.analyser.fftSize = 8192;
        this.analyser.smoothingTimeConstant = 0;
        this.ctx.createMediaStreamSource(this.stream).connect(this.analyser);
        this.ctx.resume().catch(() => {});
      } catch (e) {
        log(`agent: WebAudio analyser unavailable: ${e}`);
      }
    }
    // {rms, peakHz} of what is being received right now (null without WebAudio).
    analyse() {
      if (!this.analyser) return null;
      const n = this.analyser.fftSize;
      const time = new Float32Array(n);
      this.analyser.getFloatTimeDomainData(time);
      let sum = 0;
      for (const v of time) sum += v * v;
      const freq = new Float32Array(this.analyser.frequencyBinCount);
      this.analyser.getFloatFrequencyData(freq);
      const hzPerBin = this.ctx.sampleRate / n;
      let best = -1, bestDb = -Infinity;
      for (let i = Math.floor(100 / hzPerBin); i < Math.min(freq.length, 4000 / hzPerBin); i++) {
        if (freq[i] > bestDb) { bestDb = freq[i]; best = i; }
      }
      return {
        rms: Math.sqrt(sum / n),
        peakHz: best < 0 || bestDb === -Infinity ? null : Math.round(best * hzPerBin),
        peakDb: Number.isFinite(bestDb) ? Math.round(bestDb) : null,
        contextState: this.ctx.state,
      };
    }
    // dB of each of `freqs` (Hz) in what is being received, relative to the strongest of
    // them; the noise floor (median bin, 100-4000 Hz) too. Null without WebAudio.
    levels(freqs) {
      if (!this.analyser) return null;
      const freq = new Float32Array(this.analyser.frequencyBinCount);
      this.analyser.getFloatFrequencyData(freq);
      const hzPerBin = this.ctx.sampleRate / this.analyser.fftSize;
      const at = (hz) => {
        const c = Math.round(hz / hzPerBin);
        let best = -Infinity;
        for (let i = Math.max(0, c - 2); i <= Math.min(freq.length - 1, c + 2); i++) best = Math.max(best, freq[i]);
        return best;
      };
      const band = Array.from(freq.slice(Math.floor(100 / hzPerBin), Math.floor(4000 / hzPerBin))).sort((a, b) => a - b);
      const floor = band.length ? band[Math.floor(band.length / 2)] : -Infinity;
      const raw = freqs.map(at);
      const top = Math.max(...raw);
      const out = { floorDb: Math.round(floor - top), tones: {} };
      freqs.forEach((hz, i) => { out.tones[hz] = Number.isFinite(raw[i]) ? Math.round(raw[i] - top) : null; });
      return out;
    }
    close() {
      try { this.el.srcObject = null; this.el.remove(); } catch (_) {}
      try { this.ctx && this.ctx.close(); } catch (_) {}
    }
  }

  async function collectStats(pc, remote) {
    if (!pc) throw new Error("no media session (no RTCPeerConnection)");
    const report = await pc.getStats();
    let inbound = null, outbound = null, pair = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && (s.kind || s.mediaType) === "audio") inbound = s;
      if (s.type === "outbound-rtp" && (s.kind || s.mediaType) === "audio") outbound = s;
      if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    const cand = (id) => {
      const c = id && report.get(id);
      return c ? `${c.candidateType} ${c.protocol} ${c.address || c.ip}:${c.port}` : null;
    };
    const codec = inbound && inbound.codecId ? report.get(inbound.codecId) : null;
    return {
      packetsReceived: inbound ? inbound.packetsReceived || 0 : 0,
      bytesReceived: inbound ? inbound.bytesReceived || 0 : 0,
      packetsLost: inbound ? inbound.packetsLost || 0 : 0,
      jitter: inbound ? inbound.jitter : null,
      audioLevel: inbound ? inbound.audioLevel || 0 : 0,
      totalAudioEnergy: inbound ? inbound.totalAudioEnergy || 0 : 0,
      totalSamplesDuration: inbound ? inbound.totalSamplesDuration || 0 : 0,
      concealedSamples: inbound ? inbound.concealedSamples || 0 : 0,
      // Mean playout delay of the jitter buffer so far, and its current target (ms).
      jitterBufferMs: inbound && inbound.jitterBufferEmittedCount
        ? (1000 * inbound.jitterBufferDelay) / inbound.jitterBufferEmittedCount : null,
      jitterBufferTargetMs: inbound && inbound.jitterBufferEmittedCount && inbound.jitterBufferTargetDelay !== undefined
        ? (1000 * inbound.jitterBufferTargetDelay) / inbound.jitterBufferEmittedCount : null,
      codec: codec ? `${codec.mimeType}/${codec.clockRate}${codec.channels ? "/" + codec.channels : ""}` : null,
      packetsSent: outbound ? outbound.packetsSent || 0 : 0,
      iceConnectionState: pc.iceConnectionState,
      connectionState: pc.connectionState,
      candidatePair: pair ? `${cand(pair.localCandidateId)} -> ${cand(pair.remoteCandidateId)}` : null,
      analyser: remote ? remote.analyse() : null,
    };
  }

  // ---------------------------------------------------------------------------------------
  // Common part: the current call, incoming queue, waiters.
  // ---------------------------------------------------------------------------------------
  class BaseAgent {
    constructor(opts) {
      if (!opts || !opts.wsUrl || !opts.uri) throw new Error("makeAgent: wsUrl and uri are required");
      this.opts = Object.assign({ iceServers: [], expires: 300 }, opts);
      this.stack = opts.stack;
      this.incoming = [];            // unanswered incoming calls, oldest first
      this.incomingWaiter = null;
      this.session = null;           // the current call (stack object)
      this.established = null;       // deferred: current call established
      this.ended = null;             // deferred: current call ended (resolves with the reason)
      this.remote = null;            // RemoteAudio of the current call
      this.lastRegisterFailure = null;
      this.registeredEvents = 0;
    }
    log(line) { log(`${this.stack}: ${line}`); }

    queueIncoming(call) {
      this.incoming.push(call);
      if (this.incomingWaiter) {
        const w = this.incomingWaiter;
        this.incomingWaiter = null;
        w.resolve(call.info);
      }
    }
    waitIncoming() {
      if (this.incoming.length) return Promise.resolve(this.incoming[0].info);
      if (!this.incomingWaiter) this.incomingWaiter = deferred();
      return this.incomingWaiter.promise;
    }
    // A call became the current one: reset the waiters.
    track(session) {
      if (this.remote) { this.remote.close(); this.remote = null; }
      this.session = session;
      this.phases = [];
      this.established = deferred();
      this.ended = deferred();
      this.endReason = null;
    }
    // What happened to the current call so far, for failure messages.
    phase(p) { (this.phases || (this.phases = [])).push(p); this.log(`call: ${p}`); }
    describe() {
      return `${this.stack}: ${this.session ? (this.phases.join(" > ") || "no events") : "no call"}` +
        `${this.incoming.length ? `, ${this.incoming.length} unanswered incoming` : ""}`;
    }
    onEstablished() {
      try {
        if (this.remote) this.remote.close();
        this.remote = new RemoteAudio(this.peerConnection(), `${this.stack} remote audio`);
      } catch (e) {
        this.log(`cannot attach remote audio: ${e}`);
      }
      settle(this.established, true);
    }
    onEnded(reason) {
      this.endReason = reason;
      this.phase(`ended: ${reason}`);
      settle(this.established, false, new Error(`call ended before it was established: ${reason}`));
      settle(this.ended, true, reason);
    }
    waitEstablished() {
      if (!this.established) return Promise.reject(new Error("no call"));
      return this.established.promise;
    }
    waitEnded() {
      if (!this.ended) return Promise.reject(new Error("no call"));
      return this.ended.promise;
    }
    // The current call is set aside (e.g. on hold) so that another can be made: the
    // transferor's first call in an attended transfer.
    park() {
      if (!this.session) throw new Error("no call");
      if (this.remote) { this.remote.close(); this.remote = null; }
      this.parked = { session: this.session, ended: this.ended };
      this.session = null;
      this.established = null;
      this.ended = null;
      return true;
    }
    stats() { return collectStats(this.peerConnection(), this.remote); }
    // See RemoteAudio.levels: the received spectrum at `freqs`.
    levels(freqs) { return this.remote ? this.remote.levels(freqs) : null; }
    // Plays and analyses the remote audio of a call not answered yet (early media); `stats()`
    // reports on it from then on (Chromium decodes remote audio only for a sink that plays it).
    listenEarly() {
      const pc = this.peerConnection();
      if (!pc) throw new Error("no media session yet (no RTCPeerConnection)");
      if (!this.remote) this.remote = new RemoteAudio(pc, `${this.stack} early remote audio`);
      return true;
    }
    // The RTCDTMFSender of the call's audio sender (RFC 4733 telephone-event in the RTP stream).
    dtmfSender() {
      const pc = this.peerConnection();
      if (!pc) throw new Error("no media session (no RTCPeerConnection)");
      const s = pc.getSenders().find((x) => x.track && x.track.kind === "audio" && x.dtmf);
      if (!s) throw new Error("no audio sender with an RTCDTMFSender");
      return s.dtmf;
    }
    // Resolves with [{tone, at}] (ms since the first tone) once the sender has played every tone
    // (its last 'tonechange' has tone ""). `start()` queues the tones in the stack.
    playTones(sender, tones, duration, gap, start) {
      return new Promise((resolve, reject) => {
        const played = [];
        let t0 = null;
        const limit = setTimeout(() => { sender.removeEventListener("tonechange", onTone); reject(new Error(`DTMF: not done playing after ${played.length} tones (${JSON.stringify(played)})`)); },
          tones.length * (duration + gap) + 5000);
        const onTone = (e) => {
          const now = performance.now();
          if (t0 === null) t0 = now;
          if (e.tone) { played.push({ tone: e.tone, at: Math.round(now - t0) }); return; }
          clearTimeout(limit);
          sender.removeEventListener("tonechange", onTone);
          resolve(played);
        };
        sender.addEventListener("tonechange", onTone);
        try {
          start();
        } catch (err) {
          clearTimeout(limit);
          sender.removeEventListener("tonechange", onTone);
          reject(err);
        }
      });
    }
    // Close the SIP WebSocket(s) of this page as a network failure would (see page.html);
    // returns {killed: [socket ids], lastId}.
    killTransport() { return window.__killSockets(); }
  }

  // ---------------------------------------------------------------------------------------
  // SIP.js 0.21
  // ---------------------------------------------------------------------------------------
  class SipJsAgent extends BaseAgent {
    constructor(opts) {
      super(opts);
      const SIP = window.SIP;
      if (!SIP) throw new Error("SIP.js not loaded (dist/sipjs.js)");
      this.SIP = SIP;
      const uri = SIP.UserAgent.makeURI(opts.uri);
      if (!uri) throw new Error(`bad uri ${opts.uri}`);
      this.wantRegistered = false;
      this.ua = new SIP.UserAgent({
        uri,
        transportOptions: { server: opts.wsUrl, connectionTimeout: 5, traceSip: false },
        authorizationUsername: opts.username || uri.user,
        authorizationPassword: opts.password,
        displayName: opts.displayName,
        userAgentString: "SIP.js/0.21.2 (switchboard interop)",
        // opts.rel100: Supported: 100rel in our INVITEs (reliable provisionals, PRACK).
        sipExtension100rel: opts.rel100 ? SIP.SIPExtension.Supported : SIP.SIPExtension.Unsupported,
        logLevel: "debug",
        logBuiltinEnabled: false,
        logConfiguration: false,
        logConnector: (level, category, label, content) => console.log(`[sipjs] ${level} ${category}${label ? " " + label : ""}: ${content}`),
        // Not the default (0): the UA reconnects by itself; re-REGISTER is ours (onConnect below).
        reconnectionAttempts: 10,
        reconnectionDelay: 1,
        // Not the default (a public Google STUN server): exactly what the test asks for.
        sessionDescriptionHandlerFactoryOptions: {
          peerConnectionConfiguration: { iceServers: this.opts.iceServers, iceTransportPolicy: this.opts.iceTransportPolicy || "all" },
          iceGatheringTimeout: 3000,
        },
        delegate: {
          onConnect: () => {
            this.log("transport connected");
            // The Registerer does not re-register after a reconnect by itself (SimpleUser does this).
            if (this.wantRegistered && this.connectedOnce) {
              this.log("re-registering after reconnect");
              this.sendRegister().catch((e) => this.log(`re-register failed: ${e.message}`));
            }
            this.connectedOnce = true;
          },
          onDisconnect: (error) => this.log(`transport disconnected${error ? ": " + error.message : ""}`),
          onInvite: (invitation) => this.onInvite(invitation),
        },
      });
      this.registerer = new SIP.Registerer(this.ua, { expires: this.opts.expires });
      // SIP.js drops a 2xx to REGISTER without a Contact matching its own (same URI user) with
      // ;expires=N, calling neither onAccept nor onReject: report that instead of waiting.
      window.addEventListener("sipregister2xx", () => {
        const pending = this.pendingRegister;
        if (!pending) return;
        setTimeout(() => {
          if (this.pendingRegister !== pending) return;
          this.lastRegisterFailure = { status: null, reason: "2xx dropped by SIP.js" };
          pending.reject(new Error("REGISTER failed: SIP.js dropped the 2xx (it needs a Contact with its own Contact URI user and ;expires=N; see the [sipjs] log)"));
        }, 1000);
      });
      this.registerer.stateChange.addListener((s) => this.log(`registerer state ${s}`));
    }

    async start() {
      if (this.ua.state !== this.SIP.UserAgentState.Started) await this.ua.start();
    }
    async stop() {
      this.wantRegistered = false;
      if (this.ua.state === this.SIP.UserAgentState.Started) await this.ua.stop();
    }

    sendRegister() {
      return new Promise((resolve, reject) => {
        const pending = {
          resolve: (v) => { if (this.pendingRegister === pending) this.pendingRegister = null; resolve(v); },
          reject: (e) => { if (this.pendingRegister === pending) this.pendingRegister = null; reject(e); },
        };
        this.pendingRegister = pending;
        this.registerer.register({
          requestDelegate: {
            onAccept: (response) => {
              this.registeredEvents++;
              if (this.registerer.state !== this.SIP.RegistererState.Registered) pending.reject(new Error("REGISTER: 2xx but SIP.js is not registered"));
              else pending.resolve({ status: response.message.statusCode, contact: response.message.getHeaders("contact") });
            },
            onReject: (response) => {
              const m = response.message;
              this.lastRegisterFailure = { status: m.statusCode, reason: m.reasonPhrase };
              pending.reject(new Error(`REGISTER failed: ${m.statusCode} ${m.reasonPhrase}`));
            },
          },
        }).catch(pending.reject);
      });
    }

    async register() {
      this.wantRegistered = true;
      await this.start();
      return this.sendRegister();
    }
    isRegistered() { return this.registerer.state === this.SIP.RegistererState.Registered; }
    unregister() {
      this.wantRegistered = false;
      return new Promise((resolve, reject) => {
        this.registerer.unregister({
          requestDelegate: {
            onAccept: (r) => resolve({ status: r.message.statusCode }),
            onReject: (r) => reject(new Error(`un-REGISTER failed: ${r.message.statusCode} ${r.message.reasonPhrase}`)),
          },
        }).catch(reject);
      });
    }

    watch(session) {
      this.track(session);
      const S = this.SIP.SessionState;
      session.stateChange.addListener((state) => {
        if (this.session !== session) {
          // A parked call (see park).
          this.log(`parked call: SIP.js ${state}`);
          if (state === S.Terminated && this.parked && this.parked.session === session) settle(this.parked.ended, true, "terminated");
          return;
        }
        this.phase(`SIP.js ${state}`);
        if (state === S.Established) this.onEstablished();
        if (state === S.Terminated) this.onEnded(this.failReason || "terminated");
      });
      // No session.delegate.onBye: SIP.js then accepts the BYE itself (with onBye set we would
      // have to call bye.accept()).
    }
    peerConnection() {
      const sdh = this.session && this.session.sessionDescriptionHandler;
      return sdh ? sdh.peerConnection : null;
    }

    async call(target) {
      const uri = this.SIP.UserAgent.makeURI(target);
      if (!uri) throw new Error(`bad target ${target}`);
      const inviter = new this.SIP.Inviter(this.ua, uri, {
        sessionDescriptionHandlerOptions: { constraints: AUDIO_CONSTRAINTS },
        // opts.earlyMedia: play the answer of a 183 before the call is answered.
        earlyMedia: !!this.opts.earlyMedia,
      });
      this.failReason = null;
      this.watch(inviter);
      await inviter.invite({
        requestDelegate: {
          onTrying: () => this.phase("100"),
          onProgress: (r) => this.phase(`${r.message.statusCode}`),
          onAccept: (r) => this.phase(`${r.message.statusCode} received, ACK sent`),
          onReject: (r) => { this.failReason = `${r.message.statusCode} ${r.message.reasonPhrase}`; this.phase(this.failReason); },
        },
      });
      return this.waitEstablished();
    }

    // Hold or resume by re-INVITE (sendonly / sendrecv); resolves with the final status.
    hold(on) {
      if (!this.session) throw new Error("no call");
      this.session.sessionDescriptionHandlerOptionsReInvite = { hold: on };
      return new Promise((resolve, reject) => {
        this.session.invite({
          requestDelegate: {
            onAccept: (r) => resolve(r.message.statusCode),
            onReject: (r) => reject(new Error(`re-INVITE refused: ${r.message.statusCode} ${r.message.reasonPhrase}`)),
          },
        }).catch(reject);
      });
    }

    // REFER on `session` to `referTo` (a URI: blind transfer; a Session: attended, with
    // Replaces); resolves with the NOTIFY status lines once one is final and 2xx, then hangs
    // `session` up (BYE), as a phone does.
    async referAndLeave(session, referTo) {
      const done = deferred();
      const lines = [];
      await session.refer(referTo, {
        requestDelegate: {
          onReject: (r) => settle(done, false, new Error(`REFER refused: ${r.message.statusCode} ${r.message.reasonPhrase}`)),
        },
        onNotify: (n) => {
          n.accept();
          const line = String(n.request.body || "").split(/\r?\n/)[0];
          lines.push(line);
          const m = /^SIP\/2\.0 (\d{3})/.exec(line);
          if (m && Number(m[1]) >= 200) {
            if (Number(m[1]) < 300) settle(done, true, lines);
            else settle(done, false, new Error(`transfer failed: ${lines.join(" / ")}`));
          }
        },
      });
      const result = await done.promise;
      if (session.state === this.SIP.SessionState.Established) await session.bye();
      return result;
    }
    // Attended transfer: REFER on the parked call naming the current one (Session.refer(session)).
    attendedTransfer() {
      const p = this.parked, s = this.session;
      if (!p || !s) throw new Error("an attended transfer needs a parked call and a current one");
      return this.referAndLeave(p.session, s);
    }
    // Blind transfer of the current call's far end to `target` (REFER with Refer-To target).
    blindTransfer(target) {
      if (!this.session) throw new Error("no call");
      const uri = this.SIP.UserAgent.makeURI(target);
      if (!uri) throw new Error(`bad target ${target}`);
      return this.referAndLeave(this.session, uri);
    }

    // DTMF through the stack's own API: SessionDescriptionHandler.sendDtmf (RTCDTMFSender,
    // RFC 4733). SIP.js has no INFO DTMF of its own (Session.info with a body is the app's).
    dtmf(tones, { duration = 200, gap = 100, via = "rfc4733" } = {}) {
      if (via !== "rfc4733") throw new Error(`SIP.js sends DTMF only as RFC 4733 here (via ${via})`);
      const sdh = this.session && this.session.sessionDescriptionHandler;
      if (!sdh) throw new Error("no call");
      return this.playTones(this.dtmfSender(), tones, duration, gap, () => {
        if (!sdh.sendDtmf(tones, { duration, interToneGap: gap })) throw new Error("SIP.js sendDtmf refused (see the [sipjs] log)");
      });
    }

    onInvite(invitation) {
      const info = {
        from: invitation.remoteIdentity.uri.toString(),
        requestUri: invitation.request.ruri.toString(),
      };
      this.log(`incoming call from ${info.from} (R-URI ${info.requestUri})`);
      invitation.stateChange.addListener((s) => {
        if (s === this.SIP.SessionState.Terminated) this.incoming = this.incoming.filter((c) => c.invitation !== invitation);
      });
      this.queueIncoming({ invitation, info });
    }
    async answer() {
      const next = this.incoming.shift();
      if (!next) throw new Error("no incoming call to answer");
      this.failReason = null;
      this.watch(next.invitation);
      await next.invitation.accept({ sessionDescriptionHandlerOptions: { constraints: AUDIO_CONSTRAINTS } });
      this.phase("200 sent");
      return this.waitEstablished();
    }
    async hangup() {
      const s = this.session;
      if (!s) throw new Error("no call");
      const S = this.SIP.SessionState;
      if (s.state === S.Established) await s.bye();
      else if (s.state === S.Initial || s.state === S.Establishing) {
        if (s instanceof this.SIP.Inviter) await s.cancel();
        else await s.reject();
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // JsSIP 3.13
  // ---------------------------------------------------------------------------------------
  // JsSIP logs through the `debug` module to console.info/warn/error (bound when JsSIP loads);
  // plain text instead of %c colour markup keeps the captured console readable.
  let jssipDebugHooked = false;
  function hookJsSipDebug(JsSIP) {
    if (jssipDebugHooked) return;
    jssipDebugHooked = true;
    // Objects are not expanded (JsSIP's configuration dump would show the password).
    const str = (v) => (v === null || typeof v !== "object" ? String(v) : v instanceof Error ? v.message : `[${(v.constructor && v.constructor.name) || "object"}]`);
    JsSIP.debug.formatArgs = function (args) {
      let i = 1;
      const text = String(args[0]).replace(/%[sdifoOj%]/g, (m) => (m === "%%" ? "%" : i < args.length ? str(args[i++]) : m));
      args.splice(0, i, `[jssip] ${this.namespace} ${text}`);
    };
    JsSIP.debug.enable("JsSIP:*");
  }

  class JsSipAgent extends BaseAgent {
    constructor(opts) {
      super(opts);
      const JsSIP = window.JsSIP;
      if (!JsSIP) throw new Error("JsSIP not loaded (dist/jssip.js)");
      hookJsSipDebug(JsSIP);
      this.JsSIP = JsSIP;
      const user = (/^sips?:([^@]+)@/.exec(opts.uri) || [])[1];
      this.connected = false;
      this.everConnected = false;
      this.regWaiters = [];
      this.ua = new JsSIP.UA({
        sockets: [new JsSIP.WebSocketInterface(opts.wsUrl)],
        uri: opts.uri,
        authorization_user: opts.username || user,
        password: opts.password,
        display_name: opts.displayName,
        user_agent: "JsSIP/3.13 (switchboard interop)",
        register: true,                 // also makes JsSIP re-register after a reconnect
        register_expires: this.opts.expires,
        session_timers: false,
        connection_recovery_min_interval: 1,
        connection_recovery_max_interval: 4,
      });
      this.ua.on("connected", () => { this.connected = true; this.everConnected = true; this.log("transport connected"); });
      this.ua.on("disconnected", (e) => {
        this.connected = false;
        this.log(`transport disconnected${e && e.error ? " (error)" : ""}`);
        if (!this.everConnected) this.failRegWaiters(new Error(`WebSocket connection to ${opts.wsUrl} failed`));
      });
      this.ua.on("registered", (e) => {
        this.registeredEvents++;
        this.log(`registered (${e.response && e.response.status_code})`);
        const ws = this.regWaiters; this.regWaiters = [];
        for (const w of ws) w.resolve({ status: e.response && e.response.status_code });
      });
      this.ua.on("unregistered", () => this.log("unregistered"));
      this.ua.on("registrationFailed", (e) => {
        const r = e.response;
        this.lastRegisterFailure = { status: r ? r.status_code : null, reason: r ? r.reason_phrase : null, cause: e.cause };
        this.log(`registrationFailed: ${e.cause}${r ? ` (${r.status_code} ${r.reason_phrase})` : ""}`);
        this.failRegWaiters(new Error(`REGISTER failed: ${r ? `${r.status_code} ${r.reason_phrase}` : "no response"} (JsSIP cause: ${e.cause})`));
      });
      this.ua.on("newRTCSession", (e) => { if (e.originator === "remote") this.onInvite(e.session, e.request); });
      // JsSIP ignores a 2xx to REGISTER without a Contact pointing to it (same +sip.instance and
      // reg-id, or same URI user), emitting nothing: report that instead of waiting forever.
      window.addEventListener("sipregister2xx", () => {
        if (!this.regWaiters.length) return;
        setTimeout(() => {
          if (this.regWaiters.length) {
            this.log("a 2xx to REGISTER arrived but JsSIP did not report 'registered'");
            this.failRegWaiters(new Error("REGISTER failed: JsSIP ignored the 2xx (it needs a Contact with its +sip.instance/reg-id or its Contact URI user; see the [jssip] log)"));
          }
        }, 1000);
      });
    }
    failRegWaiters(err) {
      const ws = this.regWaiters; this.regWaiters = [];
      for (const w of ws) w.reject(err);
    }

    register() {
      const d = deferred();
      this.regWaiters.push(d);
      if (!this.ua.isConnected() && !this.started) {
        this.started = true;
        this.ua.start();                // register: true => REGISTER as soon as connected
      } else {
        this.ua.register();
      }
      return d.promise;
    }
    isRegistered() { return this.ua.isRegistered(); }
    unregister() {
      return new Promise((resolve) => {
        this.ua.once("unregistered", (e) => resolve({ status: e && e.response ? e.response.status_code : null }));
        this.ua.unregister();
      });
    }
    async stop() { this.ua.stop(); }

    peerConnection() { return this.session ? this.session.connection : null; }
    watch(session) {
      this.track(session);
      // Events of a parked call (see park) go to the parked call only.
      const mine = (f) => (e) => {
        if (this.session === session) return f(e);
        this.log(`parked call: ${e && e.cause ? e.cause : "event"}`);
        if (this.parked && this.parked.session === session && e && e.cause) settle(this.parked.ended, true, e.cause);
      };
      session.on("progress", mine((e) => this.phase(e.originator === "remote" ? `${e.response ? e.response.status_code : "1xx"} received` : "1xx sent")));
      session.on("accepted", mine((e) => this.phase(e.originator === "remote" ? "2xx received" : "2xx sent, waiting for ACK")));
      session.on("confirmed", mine((e) => { this.phase(e.originator === "remote" ? "ACK received (confirmed)" : "ACK sent (confirmed)"); this.onEstablished(); }));
      session.on("failed", mine((e) => this.onEnded(`failed: ${e.cause}${e.message && e.message.status_code ? ` (${e.message.status_code} ${e.message.reason_phrase})` : ""}`)));
      session.on("ended", mine((e) => this.onEnded(`${e.cause} (${e.originator})`)));
    }
    // Attended transfer: session.refer(target, { replaces }) on the parked call, naming the
    // current call's far end and dialog. Resolves once a NOTIFY says 2xx ("accepted"); then
    // hangs the parked call up (BYE).
    async attendedTransfer() {
      const p = this.parked, s = this.session;
      if (!p || !s) throw new Error("an attended transfer needs a parked call and a current one");
      const done = deferred();
      const lines = [];
      const subscriber = p.session.refer(s.remote_identity.uri.toString(), {
        replaces: s,
        eventHandlers: {
          requestFailed: (e) => settle(done, false, new Error(`REFER refused: ${e.response ? e.response.status_code : e.cause}`)),
          trying: (e) => lines.push(`${e.status_line ? e.status_line.status_code : ""} trying`),
          progress: (e) => lines.push(`${e.status_line ? e.status_line.status_code : ""} progress`),
          accepted: (e) => { lines.push(`${e.status_line ? e.status_line.status_code : ""} accepted`); settle(done, true, lines); },
          failed: (e) => settle(done, false, new Error(`transfer failed: ${e.status_line ? e.status_line.status_code : e.cause}`)),
        },
      });
      if (!subscriber) throw new Error("JsSIP refused to send the REFER");
      const result = await done.promise;
      if (p.session.isEstablished()) p.session.terminate();
      return result;
    }
    callOptions() {
      return {
        mediaConstraints: AUDIO_CONSTRAINTS,
        pcConfig: { iceServers: this.opts.iceServers, iceTransportPolicy: this.opts.iceTransportPolicy || "all" },
      };
    }
    async call(target) {
      const session = this.ua.call(target, this.callOptions());
      this.watch(session);
      return this.waitEstablished();
    }
    onInvite(session, request) {
      const info = { from: session.remote_identity.uri.toString(), requestUri: request.ruri.toString() };
      this.log(`incoming call from ${info.from} (R-URI ${info.requestUri})`);
      const drop = () => { this.incoming = this.incoming.filter((c) => c.session !== session); };
      session.on("failed", drop);
      session.on("ended", drop);
      this.queueIncoming({ session, info });
    }
    async answer() {
      const next = this.incoming.shift();
      if (!next) throw new Error("no incoming call to answer");
      this.watch(next.session);
      next.session.answer(this.callOptions());
      return this.waitEstablished();
    }
    async hangup() {
      if (!this.session) throw new Error("no call");
      if (!this.session.isEnded()) this.session.terminate();
    }
    // DTMF through session.sendDTMF: transportType RFC2833 (its RTCDTMFSender) or INFO
    // (application/dtmf-relay, one INFO per tone; resolves when each got its final response).
    dtmf(tones, { duration = 200, gap = 100, via = "rfc4733" } = {}) {
      if (!this.session) throw new Error("no call");
      if (via === "info") {
        return new Promise((resolve, reject) => {
          const played = [];
          let t0 = null;
          const limit = setTimeout(() => reject(new Error(`DTMF INFO: only ${played.length} of ${tones.length} answered`)), tones.length * (duration + gap) + 8000);
          const onDtmf = (e) => {
            if (e.originator !== "local") return;
            const now = performance.now();
            if (t0 === null) t0 = now;
            const entry = { tone: e.dtmf.tone, at: Math.round(now - t0) };
            played.push(entry);
            e.dtmf.on("succeeded", () => {
              entry.status = 200;
              if (played.length === tones.length && played.every((p) => p.status)) {
                clearTimeout(limit);
                this.session.removeListener("newDTMF", onDtmf);
                resolve(played);
              }
            });
            e.dtmf.on("failed", () => { clearTimeout(limit); reject(new Error(`DTMF INFO for ${entry.tone} failed`)); });
          };
          this.session.on("newDTMF", onDtmf);
          this.session.sendDTMF(tones, { duration, interToneGap: gap, transportType: "INFO" });
        });
      }
      if (via !== "rfc4733") throw new Error(`unknown DTMF transport ${via}`);
      return this.playTones(this.dtmfSender(), tones, duration, gap, () =>
        this.session.sendDTMF(tones, { duration, interToneGap: gap, transportType: "RFC2833" }));
    }
    // Hold or resume by re-INVITE; resolves once JsSIP reports it done.
    hold(on) {
      if (!this.session) throw new Error("no call");
      return new Promise((resolve, reject) => {
        const done = on ? this.session.hold({}, () => resolve(200)) : this.session.unhold({}, () => resolve(200));
        if (!done) reject(new Error(`JsSIP refused to ${on ? "hold" : "resume"} in this state`));
        setTimeout(() => reject(new Error("re-INVITE: no outcome within 8 s")), 8000);
      });
    }
  }

  // GET /api/ice-servers as a softphone does: the first request is challenged (401), the second
  // carries HTTP Digest credentials computed with WebCrypto (SHA-256; MD5 is not in WebCrypto).
  window.fetchIceServers = async function fetchIceServers(url, username, password) {
    const get = (headers) => fetch(url, { credentials: "omit", cache: "no-store", headers });
    const first = await get({});
    if (first.ok) return first.json();
    if (first.status !== 401) throw new Error(`GET ${url}: ${first.status}`);
    const header = first.headers.get("www-authenticate") || "";
    const challenge = header.split(/,\s*(?=Digest\s)/i).find((c) => /algorithm="?SHA-256"?/i.test(c));
    if (!challenge) throw new Error(`no SHA-256 Digest challenge in "${header}"`);
    const param = (name) => {
      const m = new RegExp(`${name}="([^"]*)"`, "i").exec(challenge) || new RegExp(`${name}=([^,\\s]+)`, "i").exec(challenge);
      return m ? m[1] : null;
    };
    const hex = async (text) => Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    const realm = param("realm"), nonce = param("nonce"), opaque = param("opaque");
    const u = new URL(url);
    const uri = u.pathname + u.search;
    const cnonce = Array.from(crypto.getRandomValues(new Uint8Array(8))).map((b) => b.toString(16).padStart(2, "0")).join("");
    const nc = "00000001";
    const ha1 = await hex(`${username}:${realm}:${password}`);
    const ha2 = await hex(`GET:${uri}`);
    const response = await hex(`${ha1}:${nonce}:${nc}:${cnonce}:auth:${ha2}`);
    let auth = `Digest username="${username}", realm="${realm}", nonce="${nonce}", uri="${uri}", ` +
      `algorithm=SHA-256, response="${response}", qop=auth, nc=${nc}, cnonce="${cnonce}"`;
    if (opaque) auth += `, opaque="${opaque}"`;
    const second = await get({ Authorization: auth });
    if (!second.ok) throw new Error(`GET ${url} with Digest credentials: ${second.status}`);
    return second.json();
  };

  window.makeAgent = function makeAgent(opts) {
    const stack = opts && opts.stack;
    if (stack === "sipjs") return new SipJsAgent(opts);
    if (stack === "jssip") return new JsSipAgent(opts);
    throw new Error(`makeAgent: unknown stack ${stack} (sipjs | jssip)`);
  };
})();
