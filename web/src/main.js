// The softphone page: login, status bar, dialler, incoming/active call, recent calls and
// audio settings. SIP lives in phone.js, ICE servers in ice.js, sound in audio.js, storage
// in store.js; this file only turns their state into DOM and user actions into calls.
//
// For tests and tools, the DOM carries machine-readable state: #status[data-state]
// (idle connecting registered reconnecting failed), #call-state[data-state] (calling ringing
// incoming connecting established held ended), .meter[data-level] (RMS 0..1).

import { AudioEngine, listDevices, meterScale } from "./audio.js";
import { IceServers } from "./ice.js";
import { Conn, Phone } from "./phone.js";
import * as store from "./store.js";

const $ = (id) => document.getElementById(id);
const audio = new AudioEngine();
const remoteAudio = $("remote-audio");
let phone = null;
let settings = store.loadSettings();
let meters = { tx: null, rx: null, timer: null, call: null };
let durationTimer = null;
let endedTimer = null;

const KEYS = [
  ["1", ""], ["2", "ABC"], ["3", "DEF"], ["4", "GHI"], ["5", "JKL"], ["6", "MNO"],
  ["7", "PQRS"], ["8", "TUV"], ["9", "WXYZ"], ["*", ""], ["0", "+"], ["#", ""],
];

function defaultWsUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
}

function show(el, visible) { el.hidden = !visible; }

// ---------------------------------------------------------------------------------------
// Status bar
// ---------------------------------------------------------------------------------------
function renderStatus(status) {
  $("status").dataset.state = status.state;
  $("status-text").textContent = status.text;
  show($("reconnect-button"), status.state === Conn.Reconnecting);
  $("dial-card").classList.toggle("offline", status.state !== Conn.Registered);
}

// ---------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------
function showLogin(error) {
  show($("login-view"), true);
  show($("phone-view"), false);
  const e = $("login-error");
  e.textContent = error || "";
  show(e, !!error);
  $("login-submit").disabled = false;
  $("login-submit").textContent = "Log in";
  (error ? $("login-password") : $("login-user").value ? $("login-password") : $("login-user")).focus();
}

function showPhone() {
  show($("login-view"), false);
  show($("phone-view"), true);
  $("account").textContent = `${phone.o.username}@${phone.o.domain}`;
  $("dial-input").focus();
}

async function login(creds, { remember, persistent }) {
  audio.unlock();
  const ice = new IceServers({
    username: creds.username, password: creds.password, domain: creds.domain,
    log: (m) => { console.log(`[ice] ${m}`); $("ice-status").textContent = ice.summary; },
  });
  try {
    phone = new Phone({
      ...creds,
      micId: settings.micId,
      ice,
      persistent,
      onStatus: renderStatus,
      onCall: renderCall,
    });
  } catch (e) {
    showLogin(e.message);
    return;
  }
  const current = phone;
  if (persistent) showPhone();
  try {
    await phone.login();
  } catch (e) {
    if (phone !== current) return;
    phone = null;
    if (persistent) store.saveLogin(null);
    showLogin(`Login failed: ${e.message}`);
    renderStatus({ state: Conn.Failed, text: e.message });
    return;
  }
  if (phone !== current) return;
  if (remember) store.saveLogin(creds);
  if (!persistent) showPhone();
  ice.get(); // fetch TURN credentials now, so the first call does not wait for them
  refreshDevices();
}

function onLoginSubmit(ev) {
  ev.preventDefault();
  const username = $("login-user").value.trim();
  const password = $("login-password").value;
  const wsUrl = $("login-ws").value.trim() || defaultWsUrl();
  const domain = $("login-domain").value.trim() || location.hostname;
  if (!username || !password) {
    showLogin(!username ? "Enter your username." : "Enter your password.");
    return;
  }
  if (!/^wss?:\/\/[^/]+/i.test(wsUrl)) {
    $("login-advanced").open = true;
    showLogin("The server URL must start with wss:// (or ws://).");
    return;
  }
  $("login-error").hidden = true;
  $("login-submit").disabled = true;
  $("login-submit").textContent = "Logging in…";
  const processing = $("login-processing").checked;
  login({ username, password, wsUrl, domain, processing }, { remember: $("login-remember").checked, persistent: false });
}

async function logout() {
  const p = phone;
  phone = null;
  store.saveLogin(null);
  stopMeters();
  audio.stopRing();
  $("login-password").value = "";
  showLogin();
  renderStatus({ state: Conn.Idle, text: "Not logged in" });
  if (p) await p.logout();
}

// ---------------------------------------------------------------------------------------
// Dialler
// ---------------------------------------------------------------------------------------
function buildKeypad(container, onKey, small) {
  for (const [digit, letters] of KEYS) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "key";
    b.dataset.key = digit;
    b.setAttribute("aria-label", digit === "*" ? "star" : digit === "#" ? "pound" : digit);
    const d = document.createElement("span");
    d.className = "digit";
    d.textContent = digit;
    b.append(d);
    if (!small) {
      const l = document.createElement("span");
      l.className = "letters";
      l.textContent = letters;
      l.setAttribute("aria-hidden", "true");
      b.append(l);
    }
    b.addEventListener("click", () => onKey(digit));
    container.append(b);
  }
}

function dialKey(digit) {
  const input = $("dial-input");
  input.value += digit;
  audio.click();
}

async function placeCall(target) {
  const input = $("dial-input");
  const t = (target ?? input.value).trim();
  if (!phone) return;
  if (!t) { input.focus(); return; }
  audio.unlock();
  try {
    await phone.dial(t);
  } catch (e) {
    showCallError(e.message);
  }
}

/** Which card shows: the incoming call, the active (or just ended) call, or the dialler. */
function layout() {
  const call = phone?.call;
  const ringing = !!call && call.direction === "in" && call.state === "incoming";
  const lingering = !!$("call-card").dataset.lingering;
  show($("incoming-card"), ringing);
  show($("call-card"), (!!call && !ringing) || (!call && lingering));
  show($("dial-card"), !call && !lingering);
}

/** Shows an ended call (or a call that could not start) for a moment, then the dialler. */
function linger(ms) {
  const card = $("call-card");
  card.dataset.lingering = "1";
  clearTimeout(endedTimer);
  endedTimer = setTimeout(() => {
    delete card.dataset.lingering;
    layout();
    if (!phone?.call) {
      $("call-state").dataset.state = "idle";
      $("dial-input").focus();
    }
  }, ms);
  layout();
}

function showCallError(text) {
  const el = $("call-state");
  $("call-peer").textContent = "";
  $("call-number").textContent = "";
  el.dataset.state = "ended";
  el.textContent = text;
  linger(2500);
}

// ---------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------
const STATE_TEXT = {
  calling: "Calling…",
  ringing: "Ringing…",
  incoming: "Incoming call",
  connecting: "Connecting…",
  established: "Connected",
};

function fmtDuration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return `${h ? `${h}:${String(m).padStart(2, "0")}` : m}:${String(sec).padStart(2, "0")}`;
}

function renderCall(call) {
  if (!phone || call.phone !== phone) return;
  const incomingRinging = call.direction === "in" && call.state === "incoming";
  // Local ringback for an outgoing call the far end rings without early media (180, or
  // 183 without SDP); with early media the far end's own tones come through the call.
  const localRingback = call.direction === "out" && call.state === "ringing" && !call.earlyMedia;
  if (incomingRinging) {
    $("incoming-name").textContent = call.name || call.number;
    $("incoming-number").textContent = call.name ? call.number : "";
    if (!audio.ringTimer) {
      audio.startRing();
      document.title = `Incoming call from ${call.name || call.number}`;
    }
    document.body.dataset.tone = "ring";
  } else if (localRingback) {
    if (!audio.ringTimer) audio.startRing();
    document.body.dataset.tone = "ringback";
  } else {
    audio.stopRing();
    document.title = "Switchboard softphone";
    delete document.body.dataset.tone;
  }
  if (!incomingRinging) {
    if (call.state !== "ended") {
      clearTimeout(endedTimer);
      delete $("call-card").dataset.lingering;
    }
    $("call-peer").textContent = call.name || call.number;
    $("call-number").textContent = call.name ? call.number : "";
    const st = $("call-state");
    st.dataset.state = call.state === "established" && call.held ? "held" : call.state;
    st.textContent = call.state === "ended"
      ? `Call ended${call.endReason ? `: ${call.endReason}` : ""}`
      : call.holdPending ? (call.held ? "Resuming…" : "Putting on hold…")
      : call.held ? "On hold" : STATE_TEXT[call.state] || call.state;
    const mute = $("mute-button");
    mute.setAttribute("aria-pressed", String(call.muted));
    mute.textContent = call.muted ? "Unmute" : "Mute";
    const hold = $("hold-button");
    hold.setAttribute("aria-pressed", String(call.held));
    hold.textContent = call.held ? "Resume" : "Hold";
    const established = call.state === "established";
    for (const id of ["mute-button", "hold-button", "dtmf-toggle"]) $(id).disabled = !established || call.holdPending;
    $("hangup-button").disabled = call.state === "ended";
    $("hangup-button").textContent = call.state === "calling" || call.state === "ringing" ? "Cancel" : "Hang up";
    if (call.state === "calling") $("call-duration").textContent = "0:00";
  }
  const wasHidden = $("incoming-card").hidden;
  layout();
  if (incomingRinging && wasHidden) $("answer-button").focus();
  if (!incomingRinging && call.state !== "ended" && document.activeElement?.closest?.("#incoming-card, #dial-card")) $("hangup-button").focus();
  if (call.state === "established") {
    attachMedia(call);
    if (!durationTimer) {
      const tick = () => { $("call-duration").textContent = fmtDuration(call.duration()); };
      tick();
      durationTimer = setInterval(tick, 1000);
    }
  }
  if (call.state === "ended") callEnded(call);
}

function callEnded(call) {
  clearInterval(durationTimer);
  durationTimer = null;
  $("call-duration").textContent = fmtDuration(call.duration());
  stopMeters();
  remoteAudio.srcObject = null;
  show($("dtmf-pad"), false);
  $("dtmf-toggle").setAttribute("aria-expanded", "false");
  $("dtmf-sent").textContent = "";
  renderRecent(store.addRecent({
    direction: call.direction, target: call.direction === "out" ? call.target : call.number, name: call.name,
    number: call.number, start: call.startedAt, duration: call.duration(), result: call.result, reason: call.endReason,
  }));
  // Keep the ended state readable for a moment, then back to the dialler.
  linger(2000);
  refreshDevices();
}

function attachMedia(call) {
  const remote = call.remoteStream();
  if (remote && remoteAudio.srcObject !== remote) {
    remoteAudio.srcObject = remote;
    remoteAudio.volume = settings.volume;
    if (settings.speakerId && remoteAudio.setSinkId) remoteAudio.setSinkId(settings.speakerId).catch(() => {});
    remoteAudio.play().catch(() => {});
  }
  if (meters.call !== call) startMeters(call);
}

function setMeter(el, rms) {
  const v = meterScale(rms);
  el.dataset.level = rms.toFixed(4);
  el.setAttribute("aria-valuenow", String(Math.round(v * 100)));
  el.firstElementChild.style.transform = `scaleX(${v.toFixed(3)})`;
}

function startMeters(call) {
  stopMeters();
  meters.call = call;
  meters.timer = setInterval(() => {
    // Streams gain their tracks asynchronously: make each meter once it has audio.
    if (!meters.tx) meters.tx = audio.meter(call.localStream());
    if (!meters.rx) meters.rx = audio.meter(call.remoteStream());
    setMeter($("meter-tx"), meters.tx && !call.muted && !call.held ? meters.tx.read() : 0);
    setMeter($("meter-rx"), meters.rx && !call.held ? meters.rx.read() : 0);
  }, 100);
}

function stopMeters() {
  clearInterval(meters.timer);
  meters.tx?.close();
  meters.rx?.close();
  meters = { tx: null, rx: null, timer: null, call: null };
  setMeter($("meter-tx"), 0);
  setMeter($("meter-rx"), 0);
}

function sendDtmf(tone) {
  const call = phone?.call;
  if (!call || !call.sendDtmf(tone)) return;
  audio.click();
  const el = $("dtmf-sent");
  el.textContent = `Sent: ${(el.textContent.replace(/^Sent: /, "") + tone).slice(-16)}`;
}

// ---------------------------------------------------------------------------------------
// Recent calls
// ---------------------------------------------------------------------------------------
function renderRecent(list = store.loadRecent()) {
  const ol = $("recent-list");
  ol.replaceChildren();
  show($("recent-empty"), list.length === 0);
  show($("recent-clear"), list.length > 0);
  const fmtTime = (t) => {
    const d = new Date(t);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString([], { month: "short", day: "numeric" });
  };
  for (const c of list) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = `recent-item ${c.result}`;
    const arrow = c.direction === "in" ? (c.result === "missed" ? "↙ missed" : "↙") : "↗";
    const who = c.name ? `${c.name} (${c.number})` : c.target || c.number;
    const what = c.result === "answered" ? fmtDuration(c.duration || 0) : c.result;
    b.setAttribute("aria-label", `${c.direction === "in" ? "Incoming" : "Outgoing"} call ${who}, ${what}, ${fmtTime(c.start)}. Call again.`);
    const dir = document.createElement("span"); dir.className = "dir"; dir.textContent = arrow;
    const name = document.createElement("span"); name.className = "who"; name.textContent = who;
    const meta = document.createElement("span"); meta.className = "meta"; meta.textContent = `${what} · ${fmtTime(c.start)}`;
    b.append(dir, name, meta);
    b.addEventListener("click", () => {
      $("dial-input").value = c.direction === "out" ? c.target || c.number : c.number;
      $("call-button").focus();
    });
    li.append(b);
    ol.append(li);
  }
}

// ---------------------------------------------------------------------------------------
// Audio settings
// ---------------------------------------------------------------------------------------
async function refreshDevices() {
  const { mics, speakers, canPickSpeaker } = await listDevices();
  const fill = (select, list, selected) => {
    select.replaceChildren();
    const def = document.createElement("option");
    def.value = "";
    def.textContent = "System default";
    select.append(def);
    for (const d of list) {
      if (d.id === "default") continue;
      const o = document.createElement("option");
      o.value = d.id;
      o.textContent = d.label;
      select.append(o);
    }
    select.value = list.some((d) => d.id === selected) ? selected : "";
  };
  fill($("mic-select"), mics, settings.micId);
  fill($("speaker-select"), speakers, settings.speakerId);
  show($("speaker-select"), canPickSpeaker);
  show($("speaker-select").previousElementSibling, canPickSpeaker);
  show($("speaker-unsupported"), !canPickSpeaker);
}

async function onMicChange() {
  settings.micId = $("mic-select").value;
  store.saveSettings(settings);
  if (!phone) return;
  phone.o.micId = settings.micId;
  // Switch the live call over to the new microphone.
  const call = phone.call;
  const pc = call?.peerConnection();
  if (!pc) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia(phone.mediaOptions().constraints);
    const track = stream.getAudioTracks()[0];
    const sender = pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (!sender || !track) return;
    const old = sender.track;
    await sender.replaceTrack(track);
    const local = call.localStream();
    if (local) { local.removeTrack(old); local.addTrack(track); }
    old.stop();
    call.applyTracks();
    meters.tx?.close();
    meters.tx = null;
  } catch (e) {
    console.log(`[phone] microphone switch failed: ${e.message}`);
  }
}

// ---------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------
function init() {
  buildKeypad($("keypad"), dialKey, false);
  buildKeypad($("dtmf-pad"), sendDtmf, true);
  $("login-ws").placeholder = defaultWsUrl();
  $("login-domain").placeholder = location.hostname;
  $("login-form").addEventListener("submit", onLoginSubmit);
  $("dial-form").addEventListener("submit", (e) => { e.preventDefault(); placeCall(); });
  $("call-button").addEventListener("click", () => placeCall());
  $("dial-backspace").addEventListener("click", () => { const i = $("dial-input"); i.value = i.value.slice(0, -1); i.focus(); });
  for (const b of document.querySelectorAll("[data-dial]")) {
    b.addEventListener("click", () => { $("dial-input").value = b.dataset.dial; placeCall(b.dataset.dial); });
  }
  $("answer-button").addEventListener("click", () => {
    audio.unlock();
    phone?.call?.answer().catch((e) => showCallError(`Could not answer: ${e.message}`));
  });
  $("decline-button").addEventListener("click", () => phone?.call?.decline());
  $("hangup-button").addEventListener("click", () => phone?.call?.hangup());
  $("mute-button").addEventListener("click", () => { const c = phone?.call; if (c) c.setMute(!c.muted); });
  $("hold-button").addEventListener("click", () => {
    const c = phone?.call;
    if (c) c.setHold(!c.held).catch((e) => { $("call-state").textContent = e.message; });
  });
  $("dtmf-toggle").addEventListener("click", () => {
    const pad = $("dtmf-pad");
    pad.hidden = !pad.hidden;
    $("dtmf-toggle").setAttribute("aria-expanded", String(!pad.hidden));
    if (!pad.hidden) pad.querySelector("button").focus();
  });
  $("recent-clear").addEventListener("click", () => { store.clearRecent(); renderRecent([]); });
  $("logout-button").addEventListener("click", logout);
  $("reconnect-button").addEventListener("click", () => phone?.retryNow());
  $("volume").value = String(Math.round(settings.volume * 100));
  $("volume").addEventListener("input", () => {
    settings.volume = Number($("volume").value) / 100;
    remoteAudio.volume = settings.volume;
    store.saveSettings(settings);
  });
  $("mic-select").addEventListener("change", onMicChange);
  $("speaker-select").addEventListener("change", () => {
    settings.speakerId = $("speaker-select").value;
    store.saveSettings(settings);
    if (remoteAudio.setSinkId) remoteAudio.setSinkId(settings.speakerId).catch(() => {});
  });
  navigator.mediaDevices?.addEventListener?.("devicechange", () => refreshDevices());
  // Keyboard: digits typed outside a text field during a call send DTMF.
  document.addEventListener("keydown", (e) => {
    const call = phone?.call;
    if (!call || call.state !== "established" || e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = document.activeElement?.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (/^[0-9*#]$/.test(e.key)) { e.preventDefault(); sendDtmf(e.key); }
  });
  window.addEventListener("beforeunload", (e) => { if (phone?.call) e.preventDefault(); });
  renderRecent();

  const saved = store.loadLogin();
  if (saved && saved.username && saved.password) {
    $("login-user").value = saved.username;
    $("login-remember").checked = true;
    login({ processing: true, wsUrl: defaultWsUrl(), domain: location.hostname, ...saved }, { remember: true, persistent: true });
  } else {
    showLogin();
  }
}

init();
