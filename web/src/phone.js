// The SIP side of the softphone, on SIP.js 0.21: one UserAgent over one WebSocket, one
// Registerer, at most one call at a time. It owns the connection policy SIP.js lacks:
// reconnection with backoff after a drop (SIP.js' own is a fixed delay, and off by default),
// re-REGISTER on every new connection (its Registerer does not), and a plain-words reason for
// every failure. The UI (main.js) only sees `onStatus(status)`, `onIncoming(call)` and
// `onCall(call)` callbacks, and Call objects.

import {
  Inviter, Registerer, RegistererState, SessionState, UserAgent, UserAgentState, Web,
} from "sip.js";

/** Connection states shown in the status bar. */
export const Conn = Object.freeze({
  Idle: "idle",
  Connecting: "connecting",
  Registered: "registered",
  Reconnecting: "reconnecting",
  Failed: "failed",
});

/** Seconds to wait before reconnection attempt N (1-based): 1, 2, 4, 8, 16, 30, 30, ... */
export function backoff(attempt) {
  const base = Math.min(30, 2 ** Math.max(0, attempt - 1));
  return base * (0.8 + Math.random() * 0.4);
}

/** Plain words for a final response to REGISTER. */
export function registerFailureText(code, reason) {
  if (code === 401 || code === 407 || code === 403) return "wrong username or password";
  if (code === 404) return "unknown user";
  if (code === 408) return "the server did not answer";
  if (code === 423) return "the server refused the registration interval";
  if (code === 429 || code === 503) return `the server is busy or throttling logins (${code} ${reason}); try again later`;
  return `the server refused the registration (${code} ${reason})`;
}

/** Plain words for a failed call. */
function callFailureText(code, reason) {
  switch (code) {
    case 404: case 604: return "not found";
    case 480: return "not available";
    case 486: case 600: return "busy";
    case 487: return "cancelled";
    case 603: return "declined";
    case 408: return "no answer";
    case 488: case 606: return "no common audio format";
    default: return `${code} ${reason}`.trim();
  }
}

/** Builds the SIP URI for what the user typed: "1002", "+1 555 123", "alice", "bob@example.com". */
export function targetUri(input, domain) {
  let t = (input || "").trim();
  if (!t) return null;
  t = t.replace(/^sips?:/i, "");
  if (!t.includes("@")) {
    // A phone number: drop the punctuation people type; a user name stays as it is.
    if (/^[+\d\s().*#-]+$/.test(t)) t = t.replace(/[\s().-]/g, "");
    t = `${t}@${domain}`;
  }
  return UserAgent.makeURI(`sip:${t}`) || null;
}

/** One call (incoming or outgoing) and what the UI can do with it. */
export class Call {
  constructor(phone, session, direction) {
    this.phone = phone;
    this.session = session;
    this.direction = direction; // "in" | "out"
    const id = session.remoteIdentity;
    this.number = id?.uri?.user || id?.uri?.toString() || "unknown";
    this.name = id?.displayName && id.displayName !== this.number ? id.displayName : "";
    this.target = direction === "out" ? session.request?.ruri?.toString?.() : id?.uri?.toString?.();
    this.state = direction === "in" ? "incoming" : "calling"; // calling ringing incoming established ended
    this.startedAt = Date.now();
    this.connectedAt = 0;
    this.endedAt = 0;
    this.muted = false;
    this.held = false;
    this.holdPending = false;
    this.endReason = "";
    this.result = "";
    session.stateChange.addListener((s) => this.onState(s));
  }

  onState(s) {
    if (s === SessionState.Established) {
      this.state = "established";
      this.connectedAt = Date.now();
    } else if (s === SessionState.Terminated) {
      // SIP.js terminates the session before it calls the request delegate's onReject
      // (which knows the reason): end on the next turn.
      setTimeout(() => this.end(this.endReason || (this.connectedAt ? "the other side hung up" : this.direction === "in" ? "missed call" : "call failed")), 0);
      return;
    }
    this.phone.notifyCall(this);
  }

  /** Marks the call ended (once) and tells the phone. */
  end(reason, result) {
    if (this.state === "ended") return;
    this.state = "ended";
    this.endedAt = Date.now();
    this.endReason = reason;
    this.result = result || this.result || (this.connectedAt ? "answered" : this.direction === "in" ? "missed" : "failed");
    this.phone.callEnded(this);
  }

  /** Seconds since the call connected (0 before). */
  duration() {
    if (!this.connectedAt) return 0;
    return Math.floor(((this.endedAt || Date.now()) - this.connectedAt) / 1000);
  }

  get sdh() { return this.session.sessionDescriptionHandler; }
  peerConnection() { return this.sdh?.peerConnection; }
  localStream() { return this.sdh?.localMediaStream; }
  remoteStream() { return this.sdh?.remoteMediaStream; }

  /** Answers an incoming call. */
  async answer() {
    if (this.direction !== "in" || this.session.state !== SessionState.Initial) return;
    this.state = "connecting";
    this.phone.notifyCall(this);
    await this.phone.refreshIce();
    await this.session.accept({ sessionDescriptionHandlerOptions: this.phone.mediaOptions() });
  }

  /** Declines an incoming call (603 Decline: the person does not want it). */
  decline() {
    if (this.session.state === SessionState.Initial) {
      this.result = "declined";
      this.endReason = "declined";
      this.session.reject({ statusCode: 603, reasonPhrase: "Decline" }).catch(() => {});
    }
  }

  /** Ends the call whatever its state: CANCEL, reject or BYE. */
  hangup() {
    const s = this.session;
    switch (s.state) {
      case SessionState.Initial:
      case SessionState.Establishing:
        if (s instanceof Inviter) {
          this.result = "cancelled";
          this.endReason = "cancelled";
          s.cancel().catch(() => {});
        } else {
          this.decline();
        }
        break;
      case SessionState.Established:
        this.endReason = "you hung up";
        s.bye().catch(() => {});
        break;
      default:
        this.end("call ended");
    }
  }

  applyTracks() {
    const pc = this.peerConnection();
    if (!pc) return;
    pc.getSenders().forEach((sender) => { if (sender.track) sender.track.enabled = !this.muted && !this.held; });
    pc.getReceivers().forEach((r) => { if (r.track) r.track.enabled = !this.held; });
  }

  /** Mutes or unmutes the microphone (nothing is sent while muted). */
  setMute(muted) {
    this.muted = muted;
    this.applyTracks();
    this.phone.notifyCall(this);
  }

  /** Puts the call on hold (re-INVITE, a=sendonly) or resumes it. */
  async setHold(hold) {
    if (this.state !== "established" || this.holdPending || this.held === hold) return;
    const s = this.session;
    this.holdPending = true;
    this.phone.notifyCall(this);
    try {
      const options = s.sessionDescriptionHandlerOptionsReInvite;
      options.hold = hold;
      s.sessionDescriptionHandlerOptionsReInvite = options;
      await new Promise((resolve, reject) => {
        s.invite({
          requestDelegate: {
            onAccept: () => resolve(),
            onReject: (r) => reject(new Error(`${r.message.statusCode} ${r.message.reasonPhrase}`)),
          },
        }).catch(reject);
      });
      this.held = hold;
    } catch (e) {
      const options = s.sessionDescriptionHandlerOptionsReInvite;
      options.hold = this.held;
      s.sessionDescriptionHandlerOptionsReInvite = options;
      this.phone.log(`${hold ? "hold" : "resume"} failed: ${e.message}`);
      throw new Error(`${hold ? "Hold" : "Resume"} failed: ${e.message}`);
    } finally {
      this.holdPending = false;
      this.applyTracks();
      this.phone.notifyCall(this);
    }
  }

  /** Sends one DTMF tone: RFC 4733 in the media, else SIP INFO. */
  sendDtmf(tone) {
    if (this.state !== "established" || !/^[0-9A-D*#]$/i.test(tone)) return false;
    if (this.sdh?.sendDtmf(tone, { duration: 120, interToneGap: 70 })) return true;
    this.session.info({
      requestOptions: {
        body: { contentDisposition: "render", contentType: "application/dtmf-relay", content: `Signal=${tone}\r\nDuration=120` },
      },
    }).catch((e) => this.phone.log(`DTMF INFO failed: ${e.message}`));
    return true;
  }
}

export class Phone {
  /**
   * @param {object} o
   * @param {string} o.username   SIP user (also the digest user name)
   * @param {string} o.password
   * @param {string} o.wsUrl      wss://host:port/
   * @param {string} o.domain     SIP domain (the AOR's host)
   * @param {boolean} o.processing  echo cancellation / noise suppression / AGC on the microphone
   * @param {string} o.micId      preferred microphone ("" = default)
   * @param {boolean} o.persistent keep retrying even before the first registration (remembered login)
   * @param {{get(): Promise<RTCIceServer[]>}} o.ice
   * @param {(status: {state, text}) => void} o.onStatus
   * @param {(call: Call) => void} o.onCall   any change of the current call (incl. a new incoming one)
   */
  constructor(o) {
    this.o = o;
    this.call = null;
    this.iceServers = [];
    this.wantConnected = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = 0;
    this.countdown = null;
    this.everRegistered = false;
    this.status = { state: Conn.Idle, text: "Not logged in" };
    this.loginWaiter = null;
    const uri = UserAgent.makeURI(`sip:${o.username}@${o.domain}`);
    if (!uri) throw new Error(`"${o.username}@${o.domain}" is not a valid SIP address`);
    const baseFactory = Web.defaultSessionDescriptionHandlerFactory();
    this.ua = new UserAgent({
      uri,
      authorizationUsername: o.username,
      authorizationPassword: o.password,
      transportOptions: { server: o.wsUrl, connectionTimeout: 6, keepAliveInterval: 25, traceSip: false },
      userAgentString: "Switchboard softphone (SIP.js 0.21)",
      // Reconnection is ours (with backoff): SIP.js' own (reconnectionAttempts) stays off.
      logLevel: "warn",
      logBuiltinEnabled: false,
      logConnector: (level, category, label, content) => {
        if (level === "error" || level === "warn") console.log(`[sipjs] ${level} ${category}: ${content}`);
      },
      sessionDescriptionHandlerFactory: (session, options) => baseFactory(session, {
        ...options,
        iceGatheringTimeout: 3000,
        // Never SIP.js' default (a public Google STUN server): what /api/ice-servers gave us.
        peerConnectionConfiguration: { ...(options?.peerConnectionConfiguration || {}), iceServers: this.iceServers },
      }),
      delegate: {
        onConnect: () => this.onConnect(),
        onDisconnect: (error) => this.onDisconnect(error),
        onInvite: (invitation) => this.onInvite(invitation),
      },
    });
    this.registerer = new Registerer(this.ua, { expires: 300 });
    this.registerer.stateChange.addListener((s) => {
      if (s === RegistererState.Unregistered && this.status.state === Conn.Registered && this.wantConnected) {
        this.setStatus(Conn.Connecting, "Registration lapsed; registering again…");
        this.register();
      }
    });
    this.onOnline = () => { if (this.wantConnected && !this.ua.isConnected()) this.retryNow(); };
    window.addEventListener("online", this.onOnline);
  }

  log(msg) { console.log(`[phone] ${msg}`); }

  setStatus(state, text) {
    this.status = { state, text };
    this.o.onStatus?.(this.status);
  }

  /** Connects and registers; resolves when registered, rejects with the reason for the user. */
  login() {
    this.wantConnected = true;
    this.setStatus(Conn.Connecting, `Connecting to ${this.o.wsUrl}…`);
    const p = new Promise((resolve, reject) => { this.loginWaiter = { resolve, reject }; });
    // A REGISTER that is never answered must not leave the login hanging.
    setTimeout(() => {
      if (this.loginWaiter && this.wantConnected) this.fail("The server did not answer the registration", true);
    }, 20000);
    this.ua.start().catch((e) => {
      this.log(`connect failed: ${e.message}`);
      this.fail(`Server unreachable (${this.o.wsUrl})`, true);
    });
    return p;
  }

  /** Settles the pending login, if any. */
  settleLogin(error) {
    const w = this.loginWaiter;
    this.loginWaiter = null;
    if (!w) return;
    if (error) w.reject(new Error(error));
    else w.resolve();
  }

  /**
   * A failure. Retryable ones (server unreachable, connection lost, server busy) are retried
   * with backoff once the phone has registered, or from the start for a remembered login; the
   * user sees the reason and a countdown. Otherwise the phone stops and the login form shows
   * the reason (a first login to a wrong address should not spin forever).
   */
  fail(reason, retryable) {
    if (!(retryable && (this.everRegistered || this.o.persistent))) {
      this.wantConnected = false;
      clearTimeout(this.retryTimer);
      clearInterval(this.countdown);
      this.retryTimer = null;
      this.setStatus(Conn.Failed, reason);
      this.settleLogin(reason);
      if (this.ua.state === UserAgentState.Started) this.ua.stop().catch(() => {});
      return;
    }
    this.scheduleReconnect(reason);
  }

  scheduleReconnect(reason) {
    if (!this.wantConnected || this.retryTimer) return;
    this.attempt++;
    const delay = backoff(this.attempt);
    this.retryAt = Date.now() + delay * 1000;
    this.retryReason = reason;
    const show = () => {
      const left = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
      this.setStatus(Conn.Reconnecting, `${reason} — reconnecting in ${left} s (attempt ${this.attempt})`);
    };
    show();
    clearInterval(this.countdown);
    this.countdown = setInterval(show, 1000);
    this.retryTimer = setTimeout(() => this.retryNow(), delay * 1000);
  }

  /** Tries to reconnect at once (the "Reconnect now" button, or the browser going online). */
  retryNow() {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    this.retryTimer = null;
    if (!this.wantConnected) return;
    if (this.ua.isConnected()) { this.register(); return; }
    this.setStatus(Conn.Reconnecting, `Reconnecting to ${this.o.wsUrl} (attempt ${this.attempt || 1})…`);
    this.ua.reconnect().catch((e) => {
      this.log(`reconnect failed: ${e.message}`);
      this.scheduleReconnect("Server unreachable");
    });
  }

  onConnect() {
    this.log("connected");
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    this.retryTimer = null;
    if (!this.wantConnected) return;
    this.setStatus(Conn.Connecting, this.everRegistered ? "Connected again; registering…" : "Connected; registering…");
    this.register();
  }

  onDisconnect(error) {
    this.log(`disconnected${error ? `: ${error.message}` : ""}`);
    if (!this.wantConnected) return;
    this.scheduleReconnect("Connection lost");
  }

  /** Sends REGISTER (SIP.js answers the digest challenge itself). */
  register() {
    this.registerer.register({
      requestDelegate: {
        onAccept: () => {
          const again = this.everRegistered;
          this.everRegistered = true;
          this.attempt = 0;
          this.setStatus(Conn.Registered, again ? `Registered as ${this.o.username} (reconnected)` : `Registered as ${this.o.username}`);
          this.settleLogin(null);
        },
        onReject: (response) => {
          const { statusCode, reasonPhrase } = response.message;
          const text = registerFailureText(statusCode, reasonPhrase);
          this.log(`REGISTER rejected: ${statusCode} ${reasonPhrase}`);
          // Wrong credentials or an unknown user will not fix themselves: stop.
          const permanent = [401, 403, 404, 407].includes(statusCode);
          const reason = text.charAt(0).toUpperCase() + text.slice(1);
          if (permanent) this.fail(reason, false);
          else this.fail(reason, true);
        },
      },
    }).catch((e) => {
      this.log(`REGISTER not sent: ${e.message}`);
      if (this.wantConnected) this.scheduleReconnect("Registration failed");
    });
  }

  /** Unregisters and disconnects (best effort, bounded). */
  async logout() {
    this.wantConnected = false;
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    window.removeEventListener("online", this.onOnline);
    if (this.call) this.call.hangup();
    const bounded = (p, ms) => Promise.race([p.catch(() => {}), new Promise((r) => setTimeout(r, ms))]);
    if (this.registerer.state === RegistererState.Registered && this.ua.isConnected()) {
      await bounded(this.registerer.unregister(), 2000);
    }
    if (this.ua.state === UserAgentState.Started) await bounded(this.ua.stop(), 2000);
    this.setStatus(Conn.Idle, "Not logged in");
  }

  /** getUserMedia options for calls: the chosen microphone, processing on or off. */
  mediaOptions() {
    const audio = {
      echoCancellation: this.o.processing,
      noiseSuppression: this.o.processing,
      autoGainControl: this.o.processing,
    };
    if (this.o.micId) audio.deviceId = { ideal: this.o.micId };
    return { constraints: { audio, video: false } };
  }

  async refreshIce() {
    try { this.iceServers = await this.o.ice.get(); } catch (_) { this.iceServers = []; }
  }

  /** Starts an outgoing call to what the user typed; returns the Call. */
  async dial(input) {
    if (this.call) throw new Error("Already in a call");
    if (this.status.state !== Conn.Registered) throw new Error("Not connected to the server");
    const uri = targetUri(input, this.o.domain);
    if (!uri) throw new Error(`"${input}" is not a number or SIP address`);
    const inviter = new Inviter(this.ua, uri, { sessionDescriptionHandlerOptions: this.mediaOptions() });
    const call = new Call(this, inviter, "out");
    call.number = uri.user || uri.toString();
    call.name = "";
    call.target = input.trim();
    this.call = call;
    this.notifyCall(call);
    await this.refreshIce();
    if (call.state === "ended") return call;
    inviter.invite({
      requestDelegate: {
        onProgress: (r) => {
          const { statusCode, body } = r.message;
          if (statusCode === 180 || statusCode === 183) {
            // A provisional with SDP brings early media (the far end's ringback or an
            // announcement, heard through the call's audio): no local ringback then.
            const early = Boolean(body && body.length) && !call.earlyMedia;
            if (early) call.earlyMedia = true;
            if (call.state === "calling") { call.state = "ringing"; this.notifyCall(call); }
            else if (early) this.notifyCall(call);
          }
        },
        onReject: (r) => {
          const { statusCode, reasonPhrase } = r.message;
          call.result = statusCode === 487 ? "cancelled" : "failed";
          call.endReason = callFailureText(statusCode, reasonPhrase);
        },
      },
    }).catch((e) => {
      call.end(`call failed: ${e.message}`, "failed");
    });
    return call;
  }

  onInvite(invitation) {
    if (this.call || this.status.state !== Conn.Registered) {
      invitation.reject({ statusCode: 486, reasonPhrase: "Busy Here" }).catch(() => {});
      return;
    }
    const call = new Call(this, invitation, "in");
    this.call = call;
    invitation.progress().catch(() => {}); // 180 Ringing
    this.notifyCall(call);
  }

  notifyCall(call) {
    if (call === this.call || call.state === "ended") this.o.onCall?.(call);
  }

  callEnded(call) {
    if (this.call === call) this.call = null;
    this.o.onCall?.(call);
  }
}
