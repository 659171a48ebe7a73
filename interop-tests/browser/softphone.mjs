#!/usr/bin/env node
// The softphone page (web/, served by the switchboard binary itself) in headless Chromium,
// driven only through its UI: clicks, typing and the keyboard, state read from the DOM.
// Exit status: 0 pass, 1 scenario failed, 2 setup or usage error.
//
//   node softphone.mjs --url https://127.0.0.1:8443/ --scenario call [--artifacts DIR]
//
// Scenarios:
//   echo            1001 logs in, dials 600; the call connects and the receive meter shows audio
//   call            1001 and 1002 log in (two browsers); 1001 dials 1002, 1002 answers with the
//                   keyboard; audio both ways on the meters; mute, hold/resume, DTMF keypad,
//                   hang up; both recent-calls lists show the call
//   wrong-password  the login form shows "wrong username or password"
//   restart         1001 logs in, prints "RESTART-SERVER" and waits for "RESTARTED" on stdin (the
//                   caller restarts the server on the same port); the page must show that it
//                   is reconnecting and register again by itself, without a reload
// Every scenario also fails if the page requests anything from another origin (no CDN) or
// reports a Content-Security-Policy violation or an uncaught error. With --artifacts, page
// screenshots (softphone-*.png) and console logs are written there.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const TONES = [440, 1000];
const t0 = Date.now();
const say = (m) => console.log(`[softphone] ${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
class Failure extends Error {}
class SetupError extends Error {}

function parseArgs(argv) {
  const o = { timeout: 90, chromium: process.env.CHROMIUM || "/usr/bin/chromium", user1: "1001:demo-1001", user2: "1002:demo-1002" };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (!["--url", "--scenario", "--artifacts", "--timeout", "--chromium", "--user1", "--user2"].includes(k) || v === undefined) {
      throw new SetupError(`bad argument ${k}; usage: node softphone.mjs --url URL --scenario echo|call|wrong-password|restart [--artifacts DIR] [--timeout S]`);
    }
    o[k.slice(2)] = v;
    i++;
  }
  if (!o.url || !o.scenario) throw new SetupError("--url and --scenario are required");
  for (const k of ["user1", "user2"]) {
    const [user, ...pw] = o[k].split(":");
    o[k] = { user, password: pw.join(":") };
  }
  o.timeout = Number(o.timeout);
  return o;
}

function writeTone(file, hz, seconds = 2, rate = 48000, amplitude = 0.3) {
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write("WAVE", 8);
  buf.write("fmt ", 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write("data", 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * amplitude * 32767), 44 + i * 2);
  fs.writeFileSync(file, buf);
}

// Chromium started by us (see run.mjs and interop-tests/browser/README.md for why), attached
// over CDP; its own process group, always killed at the end.
const browsers = [];
async function launch(pw, opts, name, tone, tmp) {
  const profile = fs.mkdtempSync(path.join(tmp, `profile-${name}-`));
  const args = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${tone}`, "--ignore-certificate-errors",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns", `--user-data-dir=${profile}`,
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
  ];
  const proc = spawn(opts.chromium, args, { stdio: ["ignore", "ignore", "pipe"], detached: true });
  const entry = { proc, browser: null };
  browsers.push(entry);
  const endpoint = await new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new SetupError(`${name}: Chromium did not start within 15 s: ${buf.slice(-2000)}`)), 15000);
    proc.once("error", (e) => { clearTimeout(timer); reject(new SetupError(`cannot start ${opts.chromium}: ${e.message}`)); });
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (d) => {
      buf += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(buf);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  entry.browser = await pw.chromium.connectOverCDP(endpoint, { timeout: 10000 });
  return entry.browser;
}

async function killAll() {
  for (const b of browsers) {
    try { if (b.browser) await Promise.race([b.browser.close(), sleep(2000)]); } catch (_) { /* gone */ }
    try { process.kill(-b.proc.pid, "SIGKILL"); } catch (_) { /* gone */ }
  }
  browsers.length = 0;
}
process.on("exit", () => { for (const b of browsers) { try { process.kill(-b.proc.pid, "SIGKILL"); } catch (_) { /* gone */ } } });

async function step(label, ms, fn) {
  const start = Date.now();
  say(`${label} ...`);
  let timer;
  try {
    const v = await Promise.race([
      Promise.resolve().then(fn),
      new Promise((_, rej) => { timer = setTimeout(() => rej(new Failure(`no result within ${ms / 1000} s`)), ms); }),
    ]);
    say(`${label}: ok (${Date.now() - start} ms)${v !== undefined ? " " + JSON.stringify(v) : ""}`);
    return v;
  } catch (e) {
    throw new Failure(`${label}: ${e.message.split("\n")[0]}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `fn` (in node) until it returns a truthy value. */
async function until(fn, what, intervalMs = 150) {
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    await sleep(intervalMs);
  }
}

/** One softphone page and everything it did. */
class Softphone {
  constructor(name, page, origin) {
    this.name = name;
    this.page = page;
    this.origin = origin;
    this.console = [];
    this.problems = [];
    page.on("console", (m) => {
      const line = `${m.type()}: ${m.text()}`;
      this.console.push(line);
      if (/Content Security Policy|Refused to (load|execute|apply|connect)/i.test(m.text())) this.problems.push(`CSP: ${m.text()}`);
    });
    page.on("pageerror", (e) => { this.console.push(`pageerror: ${e.message}`); this.problems.push(`uncaught error: ${e.message}`); });
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.protocol === "data:" || u.protocol === "blob:") return;
      const same = u.host === new URL(origin).host;
      if (!same) this.problems.push(`request to another origin: ${r.url()}`);
    });
  }
  async open() {
    await this.page.goto(this.origin, { timeout: 15000 });
    const secure = await this.page.evaluate(() => window.isSecureContext);
    if (!secure) throw new SetupError(`${this.origin} is not a secure context in Chromium`);
    await this.page.evaluate(() => { window.__loadedAt = Date.now(); });
  }
  state(sel) { return this.page.getAttribute(sel, "data-state"); }
  text(sel) { return this.page.textContent(sel); }
  async level(which) { return Number(await this.page.getAttribute(`#meter-${which}`, "data-level")); }
  /** Logs in through the form with the keyboard alone (Tab, typing, Space, Enter). */
  async login(user, password) {
    await this.page.waitForSelector("#login-view:not([hidden])", { timeout: 10000 });
    await this.page.focus("#login-user");
    await this.page.keyboard.type(user);
    await this.page.keyboard.press("Tab");
    await this.page.keyboard.type(password);
    // Echo cancellation etc. off in tests, or levels swing between runs (GUIDE §3).
    await this.page.click("#login-advanced summary");
    await this.page.uncheck("#login-processing");
    await this.page.focus("#login-password");
    await this.page.keyboard.press("Enter");
  }
  async waitStatus(state, ms = 15000) {
    await this.page.waitForSelector(`#status[data-state="${state}"]`, { timeout: ms });
    return this.text("#status-text");
  }
  /** Waits for a call state; fails at once, with the reason shown, if the call ends first. */
  async waitCall(state, ms = 15000) {
    const sel = state === "ended" ? `#call-state[data-state="ended"]` : `#call-state[data-state="${state}"], #call-state[data-state="ended"]`;
    await this.page.waitForSelector(sel, { timeout: ms });
    const [now, text] = [await this.state("#call-state"), await this.text("#call-state")];
    if (now !== state) throw new Failure(`expected call state ${state}, but: ${text}`);
    return text;
  }
  /** Waits until the meter has read above `min` for `n` consecutive 100 ms samples. */
  async waitLevelAbove(which, min, n = 5) {
    let run = 0, max = 0;
    return until(async () => {
      const l = await this.level(which);
      max = Math.max(max, l);
      run = l > min ? run + 1 : 0;
      return run >= n ? `${which} level ${l.toFixed(3)}` : null;
    }, "", 100);
  }
  async waitLevelBelow(which, max, n = 8) {
    let run = 0;
    return until(async () => {
      const l = await this.level(which);
      run = l < max ? run + 1 : 0;
      return run >= n ? `${which} level ${l.toFixed(4)}` : null;
    }, "", 100);
  }
  check() {
    if (this.problems.length) throw new Failure(`${this.name}: ${[...new Set(this.problems)].join("; ")}`);
  }
  async screenshot(dir, file) {
    if (!dir) return;
    fs.mkdirSync(dir, { recursive: true });
    await this.page.screenshot({ path: path.join(dir, file), fullPage: true });
    say(`screenshot ${path.join(dir, file)}`);
  }
}

async function newPhone(ctx, index, name, viewport) {
  const browser = ctx.browsers[index];
  const context = browser.contexts()[0] || (await browser.newContext());
  const page = await context.newPage();
  await page.setViewportSize(viewport);
  const sp = new Softphone(name, page, ctx.opts.url);
  ctx.phones.push(sp);
  await step(`${name}: open ${ctx.opts.url}`, 15000, () => sp.open());
  return sp;
}

function readLine() {
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (d) => { buf += d; const nl = buf.indexOf("\n"); if (nl >= 0) { done(); resolve(buf.slice(0, nl).trim()); } };
    const onEnd = () => { done(); reject(new Failure("stdin closed")); };
    const done = () => { process.stdin.off("data", onData); process.stdin.off("end", onEnd); process.stdin.pause(); };
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", onData);
    process.stdin.on("end", onEnd);
    process.stdin.resume();
  });
}

// Levels are RMS of the meters' analysers: a 0.3-amplitude tone through Opus reads ~0.1-0.2;
// silence (muted or held far end) reads ~0.
const AUDIBLE = 0.02;
const SILENT = 0.003;

async function scenarioEcho(ctx) {
  const { user1 } = ctx.opts;
  const p = await newPhone(ctx, 0, `softphone-${user1.user}`, { width: 1000, height: 760 });
  await step(`${p.name}: log in`, 20000, async () => { await p.login(user1.user, user1.password); return p.waitStatus("registered"); });
  await p.page.click('[data-dial="600"]');
  await step(`${p.name}: call 600 connects`, 20000, () => p.waitCall("established"));
  await step(`${p.name}: receive meter shows the echoed audio`, 15000, () => p.waitLevelAbove("rx", AUDIBLE));
  await p.screenshot(ctx.opts.artifacts, "softphone-echo.png");
  await step(`${p.name}: hang up`, 10000, async () => { await p.page.click("#hangup-button"); return p.waitCall("ended"); });
}

async function scenarioCall(ctx) {
  const { user1, user2 } = ctx.opts;
  const a = await newPhone(ctx, 0, `softphone-${user1.user}`, { width: 1000, height: 760 });
  const b = await newPhone(ctx, 1, `softphone-${user2.user}`, { width: 390, height: 844 });
  await a.screenshot(ctx.opts.artifacts, "softphone-login.png");
  await Promise.all([
    step(`${a.name}: log in (keyboard)`, 20000, async () => { await a.login(user1.user, user1.password); return a.waitStatus("registered"); }),
    step(`${b.name}: log in (keyboard)`, 20000, async () => { await b.login(user2.user, user2.password); return b.waitStatus("registered"); }),
  ]);
  await a.screenshot(ctx.opts.artifacts, "softphone-idle.png");
  // ICE servers: when the server offers /api/ice-servers (401 without credentials), the page
  // must have answered the digest challenge and got servers; on 404 it uses none.
  await step(`${a.name}: ICE servers from /api/ice-servers`, 10000, async () => {
    const offered = await a.page.evaluate(async () => (await fetch("/api/ice-servers", { credentials: "omit" })).status);
    const shown = await until(async () => {
      const t = await a.text("#ice-status");
      return /not fetched/.test(t) ? null : t;
    }, "", 200);
    if (offered === 401 && !/^[1-9]\d* servers?$/.test(shown)) throw new Failure(`the server offers ICE servers but the page shows "${shown}"`);
    if (offered === 404 && !/not offered/.test(shown)) throw new Failure(`the server has no /api/ice-servers but the page shows "${shown}"`);
    return `${offered}: ${shown}`;
  });
  // Dial with the on-screen keypad, call with Enter.
  for (const d of user2.user) await a.page.click(`#keypad [data-key="${d}"]`);
  const typed = await a.page.inputValue("#dial-input");
  if (typed !== user2.user) throw new Failure(`keypad typed "${typed}"`);
  await a.page.focus("#dial-input");
  await a.page.keyboard.press("Enter");
  await step(`${b.name}: incoming call from ${user1.user} shown`, 15000, async () => {
    await b.page.waitForSelector("#incoming-card:not([hidden])", { timeout: 15000 });
    const who = `${await b.text("#incoming-name")} ${await b.text("#incoming-number")}`.trim();
    if (!who.includes(user1.user)) throw new Failure(`incoming call shows "${who}"`);
    const ringing = await b.page.evaluate(() => document.activeElement?.id);
    if (ringing !== "answer-button") throw new Failure(`focus is on ${ringing}, not the Answer button`);
    return who;
  });
  await step(`${a.name}: caller sees ringing`, 10000, () => a.waitCall("ringing"));
  // 180 without SDP: the caller's page plays local ringback; the callee's page rings.
  await step(`${a.name}: local ringback; ${b.name}: ring tone`, 5000, async () => {
    return until(async () => {
      const t = [await a.page.evaluate(() => document.body.dataset.tone || ""), await b.page.evaluate(() => document.body.dataset.tone || "")];
      return t[0] === "ringback" && t[1] === "ring" ? t : null;
    }, null, 100);
  });
  await b.screenshot(ctx.opts.artifacts, "softphone-incoming.png");
  await b.page.keyboard.press("Enter"); // answer with the keyboard
  await step("both sides connected", 15000, async () => [await a.waitCall("established"), await b.waitCall("established")]);
  await step("ringback and ring tone stopped", 5000, () => until(async () => {
    const t = [await a.page.evaluate(() => document.body.dataset.tone || ""), await b.page.evaluate(() => document.body.dataset.tone || "")];
    return t[0] === "" && t[1] === "" ? "silent" : null;
  }, null, 100));
  await step("audio both ways on the meters", 15000, async () => [
    await a.waitLevelAbove("rx", AUDIBLE), await b.waitLevelAbove("rx", AUDIBLE),
    await a.waitLevelAbove("tx", AUDIBLE), await b.waitLevelAbove("tx", AUDIBLE),
  ]);
  await sleep(1200); // a duration on screen
  const dur = await a.text("#call-duration");
  if (!/^\d+:\d\d$/.test(dur) || dur === "0:00") throw new Failure(`call duration shows "${dur}"`);
  await a.screenshot(ctx.opts.artifacts, "softphone-call.png");
  await b.screenshot(ctx.opts.artifacts, "softphone-call-phone.png");

  await step(`${a.name}: mute -> ${b.name} hears silence`, 10000, async () => {
    await a.page.click("#mute-button");
    if ((await a.page.getAttribute("#mute-button", "aria-pressed")) !== "true") throw new Failure("mute not pressed");
    return b.waitLevelBelow("rx", SILENT);
  });
  await step(`${a.name}: unmute -> ${b.name} hears the tone again`, 10000, async () => {
    await a.page.click("#mute-button");
    return b.waitLevelAbove("rx", AUDIBLE);
  });
  await step(`${a.name}: hold -> on hold, ${b.name} hears silence`, 15000, async () => {
    await a.page.click("#hold-button");
    const s = await a.waitCall("held");
    return [s, await b.waitLevelBelow("rx", SILENT)];
  });
  await step(`${a.name}: resume -> audio both ways again`, 15000, async () => {
    await a.page.click("#hold-button");
    const s = await a.waitCall("established");
    return [s, await b.waitLevelAbove("rx", AUDIBLE), await a.waitLevelAbove("rx", AUDIBLE)];
  });
  await step(`${a.name}: DTMF from the in-call keypad`, 5000, async () => {
    await a.page.click("#dtmf-toggle");
    await a.page.click('#dtmf-pad [data-key="5"]');
    await a.page.click('#dtmf-pad [data-key="#"]');
    const sent = await a.text("#dtmf-sent");
    if (!sent.includes("5#")) throw new Failure(`DTMF line shows "${sent}"`);
    return sent;
  });
  await step(`${a.name}: output volume slider`, 5000, async () => {
    await a.page.$eval("#volume", (el) => { el.value = "40"; el.dispatchEvent(new Event("input", { bubbles: true })); });
    const v = await a.page.evaluate(() => document.getElementById("remote-audio").volume);
    if (Math.abs(v - 0.4) > 0.01) throw new Failure(`volume ${v}`);
    return v;
  });
  await step(`${a.name}: hang up -> both ended`, 10000, async () => {
    await a.page.click("#hangup-button");
    return [await a.waitCall("ended"), await b.waitCall("ended")];
  });
  await step("both back at the dialler with the call in recent calls", 10000, async () => {
    for (const p of [a, b]) {
      await p.page.waitForSelector("#dial-card:not([hidden])", { timeout: 8000 });
      const first = await p.text("#recent-list li:first-child");
      const meta = await p.text("#recent-list li:first-child .meta");
      const peer = p === a ? user2.user : user1.user;
      if (!first || !first.includes(peer) || !/^\d+:\d\d ·/.test(meta)) throw new Failure(`${p.name}: recent calls start with "${first}"`);
    }
    return "ok";
  });
  // Declined call: b calls a, a declines.
  await b.page.fill("#dial-input", user1.user);
  await b.page.click("#call-button");
  await step(`${a.name}: decline an incoming call`, 15000, async () => {
    await a.page.waitForSelector("#incoming-card:not([hidden])", { timeout: 15000 });
    await a.page.click("#decline-button");
    return b.waitCall("ended");
  });
  await step(`${a.name}: log out`, 10000, async () => {
    await a.page.waitForSelector("#logout-button", { state: "visible" });
    await a.page.click("#logout-button");
    await a.page.waitForSelector("#login-view:not([hidden])", { timeout: 8000 });
    return a.state("#status");
  });
}

async function scenarioWrongPassword(ctx) {
  const { user1 } = ctx.opts;
  const p = await newPhone(ctx, 0, "softphone-wrong-password", { width: 390, height: 844 });
  await p.login(user1.user, `${user1.password}-wrong`);
  const shown = await step("login form shows the reason", 20000, async () => {
    await p.page.waitForSelector("#login-error:not([hidden])", { timeout: 20000 });
    return p.text("#login-error");
  });
  if (!/wrong username or password/i.test(shown)) throw new Failure(`login error reads "${shown}"`);
  const status = await p.state("#status");
  if (status !== "failed") throw new Failure(`status is ${status}, expected failed`);
  await p.screenshot(ctx.opts.artifacts, "softphone-wrong-password.png");
}

async function scenarioRestart(ctx) {
  const { user1 } = ctx.opts;
  const p = await newPhone(ctx, 0, `softphone-${user1.user}`, { width: 1000, height: 760 });
  await step(`${p.name}: log in`, 20000, async () => { await p.login(user1.user, user1.password); return p.waitStatus("registered"); });
  // Record every status the page shows from now on.
  await p.page.evaluate(() => {
    window.__states = [];
    const el = document.getElementById("status");
    new MutationObserver(() => window.__states.push(`${el.dataset.state}: ${document.getElementById("status-text").textContent}`))
      .observe(el, { attributes: true, childList: true, subtree: true, characterData: true });
  });
  console.log("RESTART-SERVER");
  const line = await step("server restart (by the caller)", 30000, () => readLine());
  if (line !== "RESTARTED") throw new Failure(`expected RESTARTED on stdin, got "${line}"`);
  const text = await step(`${p.name}: says it is reconnecting, then registers again by itself`, 45000, () => until(async () => {
    const r = await p.page.evaluate(() => ({
      states: window.__states, state: document.getElementById("status").dataset.state, text: document.getElementById("status-text").textContent,
    }));
    return r.state === "registered" && r.states.some((s) => s.startsWith("reconnecting")) ? r.text : null;
  }, "", 250));
  const states = await p.page.evaluate(() => window.__states);
  say(`statuses shown: ${JSON.stringify([...new Set(states)])}`);
  if (!states.some((s) => s.startsWith("reconnecting"))) throw new Failure("the page never said it was reconnecting");
  if (!/reconnected/i.test(text)) throw new Failure(`status after re-registering reads "${text}"`);
  const loadedAt = await p.page.evaluate(() => window.__loadedAt);
  if (!loadedAt) throw new Failure("the page was reloaded");
  await p.screenshot(ctx.opts.artifacts, "softphone-reconnected.png");
  // And it works: the echo/any call needs a server; a call to an unregistered user is answered.
  await p.page.fill("#dial-input", "1003");
  await p.page.click("#call-button");
  await step(`${p.name}: a call after the restart is answered by the server`, 15000, () => p.waitCall("ended"));
}

async function main() {
  let opts;
  try { opts = parseArgs(process.argv.slice(2)); } catch (e) { console.error(e.message); return 2; }
  let pw;
  try { pw = await import("playwright-core"); } catch (e) {
    console.error(`[softphone] SETUP ERROR: playwright-core missing (${e.message}); run npm ci in interop-tests/browser`);
    return 2;
  }
  if (!fs.existsSync(opts.chromium)) { console.error(`[softphone] SETUP ERROR: no Chromium at ${opts.chromium}`); return 2; }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sb-softphone-"));
  const ctx = { opts, browsers: [], phones: [] };
  let status = 0, deadline;
  try {
    const need = opts.scenario === "call" ? 2 : 1;
    for (let i = 0; i < need; i++) {
      const tone = path.join(tmp, `tone-${TONES[i]}.wav`);
      writeTone(tone, TONES[i]);
      ctx.browsers.push(await launch(pw, opts, `chromium${i + 1}`, tone, tmp));
    }
    const scenarios = { echo: scenarioEcho, call: scenarioCall, "wrong-password": scenarioWrongPassword, restart: scenarioRestart };
    const run = scenarios[opts.scenario];
    if (!run) throw new SetupError(`unknown scenario ${opts.scenario}`);
    await Promise.race([
      run(ctx),
      new Promise((_, rej) => { deadline = setTimeout(() => rej(new Failure(`the whole run exceeded ${opts.timeout} s`)), opts.timeout * 1000); }),
    ]);
    for (const p of ctx.phones) p.check();
    say(`PASS ${opts.scenario}`);
  } catch (e) {
    status = e instanceof SetupError ? 2 : 1;
    say(`${status === 2 ? "SETUP ERROR" : "FAIL"} ${opts.scenario}: ${e instanceof Failure || e instanceof SetupError ? e.message : e.stack}`);
    for (const p of ctx.phones) {
      if (p.problems.length) say(`${p.name} problems: ${[...new Set(p.problems)].join("; ")}`);
      const st = await Promise.race([p.page.evaluate(() => `${document.getElementById("status").dataset.state}: ${document.getElementById("status-text").textContent} | call: ${document.getElementById("call-state").dataset.state} ${document.getElementById("call-state").textContent}`).catch((x) => x.message), sleep(2000)]);
      say(`${p.name}: ${st}`);
      say(`---- ${p.name} console (last 60) ----`);
      for (const l of p.console.slice(-60)) console.log(`  ${l.slice(0, 400)}`);
      await Promise.race([p.screenshot(opts.artifacts, `${p.name}-failure.png`).catch(() => {}), sleep(3000)]);
    }
  } finally {
    clearTimeout(deadline);
    if (opts.artifacts) {
      fs.mkdirSync(opts.artifacts, { recursive: true });
      for (const p of ctx.phones) fs.writeFileSync(path.join(opts.artifacts, `${p.name}.console.txt`), p.console.join("\n") + "\n");
    }
    await killAll();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return status;
}

main().then((c) => process.exit(c), (e) => { console.error(`[softphone] internal error: ${e.stack || e}`); process.exit(2); });
