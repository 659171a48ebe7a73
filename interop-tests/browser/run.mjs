#!/usr/bin/env node
// Browser interop harness: drives SIP.js 0.21 and JsSIP 3.13 in headless Chromium against a
// running Switchboard. See README.md. Exit status: 0 pass, 1 scenario failed, 2 usage or setup
// error (missing Chromium, missing node_modules, bad arguments).
//
//   node run.mjs --wss wss://127.0.0.1:8443 --domain example.test \
//     --user1 1001:secret1 --user2 1002:secret2 --scenario call:sipjs:jssip
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const STACKS = ["sipjs", "jssip"];
const TONES = [440, 1000, 700]; // Hz: browsers 1, 2, 3 (none a harmonic of another)

const USAGE = `usage: node run.mjs --scenario NAME --wss WS_URL [options]

scenarios:
  register-wrong-password[:STACK]   REGISTER with a wrong password must be rejected (401/403)
                                    after the stack answered the challenge (both stacks if no STACK)
  register:STACK                    user1 registers, then unregisters
  call:A:B                          user1 (stack A) calls user2 (stack B); audio both ways; A hangs up
  reconnect:STACK                   user2 registers, its WebSocket is killed, the stack must
                                    reconnect and re-register by itself; then user1 calls user2
  echo:STACK[:NUMBER]               user1 calls the echo test (600, or NUMBER: e.g. a number routed to
                                    an echoing trunk): hears its own tone; hangs up
  echo-hold:STACK[:NUMBER]          the same, with hold (nothing comes back) and resume (audio again)
                                    by re-INVITE before hanging up
  dtmf:STACK:NUMBER:TONES[:VIA]     user1 calls NUMBER (an echo), hears itself, sends TONES (0-9*#A-D)
                                    as DTMF with the stack's API (VIA rfc4733, the default: RTCDTMFSender;
                                    info: SIP INFO, JsSIP only), still hears itself, hangs up. Prints
                                    "DTMF SENT <tones> <duration ms> <gap ms>"; the far end checks receipt
  join:STACK:NUMBER:HZ              user1 calls NUMBER (a conference) and must hear HZ (another
                                    participant's tone); hangs up
  answer-refer:sipjs:HZ:TARGET      user1 answers the first incoming call (prints READY), must hear HZ,
                                    then transfers the caller blind to TARGET (REFER on its dialog);
                                    the NOTIFY must say 200; hangs up, prints "TRANSFERRED"
  answer-attended:STACK:HZ:TARGET   user1 answers the first incoming call (prints READY), must hear HZ,
                                    holds it, calls TARGET (an echo: hears itself), then transfers the
                                    caller to TARGET's party with REFER + Replaces on the incoming call
                                    (the stack's API): the NOTIFY must say 200, the browser hangs the
                                    first call up (prints "TRANSFERRED"), the server ends the second
  attended:STACK:NUM1:NUM2:HZ       user1 calls NUM1 (an echo: hears itself), holds it, calls NUM2 (a
                                    party playing HZ: hears it), then transfers NUM1's party to NUM2's
                                    with REFER + Replaces on the first call (the stack's API): the NOTIFY
                                    must say 200, the browser hangs the first call up (prints
                                    "TRANSFERRED") and the server must end the second (replaced)
  answer:STACK:HZ                   user1 registers, prints READY, answers the first incoming call
                                    (e.g. from a trunk) and must hear HZ; waits for the far end to
                                    hang up
  conference:A:B                    user1 (stack A) and user2 (stack B) dial conference 700: each
                                    hears the other; both hang up
  conference3:A:B:C:ROOM:HZ         user1, user2, user3 (stacks A, B, C; tones 440, 1000, 700 Hz) dial
                                    conference ROOM where a phone already plays HZ: each must hear the
                                    other two and the phone, never itself. Then user3 is muted through
                                    the admin API (--admin; the participant labelled user3) and prints
                                    "MUTED <Date.now()>"; users 1 and 2 must no longer hear 700 Hz, user3 still hears
                                    all. All hang up
  webrtc-echo[:MIC_HZ]              no SIP: prints "OFFER <json sdp>" on stdout, reads "ANSWER <json sdp>"
                                    from stdin (a media leg under test answers), then expects its own
                                    tone back (an echo room); the peer's WebRTC leg is what is tested
  webrtc-mdns                       the same with mDNS (.local) host candidates, as real browsers send
  turn-relay                        user1 and user2 (SIP.js) each fetch /api/ice-servers in the page
                                    (HTTP Digest with their SIP password), then call each other with
                                    iceTransportPolicy 'relay': the selected pair must be relay on both
                                    sides and audio must flow. Needs --http (the server's HTTPS base URL)
  selftest                          no server: fake audio through a local RTCPeerConnection pair
                                    (checks Chromium, fake capture, stats and the tone detector)
  STACK is sipjs or jssip.

options:
  --wss URL            SIP WebSocket URL of the server (wss://... or ws://...)
  --http URL           the server's HTTP(S) base URL; only used by --ice-servers api
  --domain DOMAIN      SIP domain of the users (default: host of --wss)
  --user1 USER:PASS    first user  (default 1001:demo-1001, the demo user of the built-in config)
  --user2 USER:PASS    second user (default 1002:demo-1002)
  --user3 USER:PASS    third user (conference3 only; default 1003:demo-1003)
  --admin URL          the server's admin base URL (http://127.0.0.1:PORT; conference3)
  --ice-servers JSON   RTCIceServer list for both stacks (default []); "api" = GET <http>/api/ice-servers
  --timeout SECS       bound of the whole run (default 60)
  --talk SECS          how long a call runs before its stats are checked (default 3)
  --dtmf-duration MS   length of each DTMF tone (default 200)
  --dtmf-gap MS        pause between DTMF tones (default 100)
  --no-tone-check      do not require the far end's tone frequency to be the dominant one received
  --artifacts DIR      write full SIP traces and logs of every page there (also on success)
  --chromium PATH      Chromium binary (default $CHROMIUM or /usr/bin/chromium)
  --verbose            print every SIP message as it is sent/received
  --serve-only         only serve the page (http://127.0.0.1:PORT/) for manual debugging
`;

// ------------------------------------------------------------------------------------------
// Output and errors
// ------------------------------------------------------------------------------------------
const t0 = Date.now();
const stamp = () => ((Date.now() - t0) / 1000).toFixed(1).padStart(5);
const say = (msg) => console.log(`[browser] ${stamp()}s ${msg}`);

class UsageError extends Error {}
class SetupError extends Error {}
class Failure extends Error {}

function parseArgs(argv) {
  const o = {
    timeout: 60, talk: 3, dtmfDuration: 200, dtmfGap: 100, toneCheck: true, verbose: false, serveOnly: false,
    user1: "1001:demo-1001", user2: "1002:demo-1002", user3: "1003:demo-1003", iceServers: "[]",
    chromium: process.env.CHROMIUM || "/usr/bin/chromium",
  };
  const flags = { "--no-tone-check": () => (o.toneCheck = false), "--verbose": () => (o.verbose = true), "--serve-only": () => (o.serveOnly = true) };
  const valued = {
    "--wss": "wss", "--http": "http", "--domain": "domain", "--user1": "user1", "--user2": "user2",
    "--user3": "user3", "--admin": "admin",
    "--scenario": "scenario", "--timeout": "timeout", "--talk": "talk", "--artifacts": "artifacts",
    "--chromium": "chromium", "--ice-servers": "iceServers",
    "--dtmf-duration": "dtmfDuration", "--dtmf-gap": "dtmfGap",
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i], v;
    if (a === "-h" || a === "--help") { console.log(USAGE); process.exit(0); }
    if (flags[a]) { flags[a](); continue; }
    const eq = a.indexOf("=");
    if (eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    if (!valued[a]) throw new UsageError(`unknown argument ${argv[i]}`);
    if (v === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      v = argv[++i];
    }
    o[valued[a]] = v;
  }
  o.timeout = Number(o.timeout);
  o.talk = Number(o.talk);
  o.dtmfDuration = Number(o.dtmfDuration);
  o.dtmfGap = Number(o.dtmfGap);
  if (!(o.dtmfDuration > 0) || !(o.dtmfGap > 0)) throw new UsageError("--dtmf-duration and --dtmf-gap must be positive numbers");
  if (!(o.timeout > 0) || !(o.talk >= 0)) throw new UsageError("--timeout and --talk must be numbers");
  if (o.serveOnly) return o;
  if (!o.scenario) throw new UsageError("--scenario is required");
  if (o.scenario !== "selftest" && !o.scenario.startsWith("webrtc-")) {
    if (!o.wss || !/^wss?:\/\//.test(o.wss)) throw new UsageError("--wss ws(s)://HOST:PORT[/path] is required");
    if (!o.domain) o.domain = new URL(o.wss).hostname.replace(/^\[|\]$/g, "");
  }
  for (const k of ["user1", "user2", "user3"]) {
    const m = /^([^:]+):(.*)$/.exec(o[k]);
    if (!m) throw new UsageError(`--${k} must be USER:PASSWORD`);
    o[k] = { user: m[1], password: m[2] };
  }
  return o;
}

function parseScenario(s) {
  const parts = s.split(":");
  const stack = (x) => {
    if (!STACKS.includes(x)) throw new UsageError(`unknown stack "${x}" in scenario ${s} (sipjs | jssip)`);
    return x;
  };
  switch (parts[0]) {
    case "register-wrong-password":
      if (parts.length === 1) return { kind: parts[0], stacks: STACKS };
      if (parts.length === 2) return { kind: parts[0], stacks: [stack(parts[1])] };
      break;
    case "register":
    case "reconnect":
      if (parts.length === 2) return { kind: parts[0], stack: stack(parts[1]) };
      break;
    case "call":
      if (parts.length === 3) return { kind: "call", a: stack(parts[1]), b: stack(parts[2]) };
      break;
    case "selftest":
      if (parts.length === 1) return { kind: "selftest" };
      break;
    case "echo":
    case "echo-hold":
      if (parts.length === 2 || (parts.length === 3 && parts[2])) return { kind: parts[0], stack: stack(parts[1]), number: parts[2] || "600" };
      break;
    case "dtmf":
      if ((parts.length === 4 || (parts.length === 5 && ["rfc4733", "info"].includes(parts[4]))) && parts[2] && /^[0-9A-D*#]+$/i.test(parts[3])) {
        return { kind: "dtmf", stack: stack(parts[1]), number: parts[2], tones: parts[3], via: parts[4] || "rfc4733" };
      }
      break;
    case "join":
      if (parts.length === 4 && Number(parts[3]) > 0) return { kind: "join", stack: stack(parts[1]), number: parts[2], hz: Number(parts[3]) };
      break;
    case "conference":
      if (parts.length === 3) return { kind: "conference", a: stack(parts[1]), b: stack(parts[2]) };
      break;
    case "answer-refer":
      if (parts.length === 4 && parts[1] === "sipjs" && Number(parts[2]) > 0) return { kind: "answer-refer", stack: "sipjs", hz: Number(parts[2]), target: parts[3] };
      break;
    case "answer-attended":
      if (parts.length === 4 && Number(parts[2]) > 0) return { kind: "answer-attended", stack: stack(parts[1]), hz: Number(parts[2]), target: parts[3] };
      break;
    case "attended":
      if (parts.length === 5 && Number(parts[4]) > 0) {
        return { kind: "attended", stack: stack(parts[1]), first: parts[2], second: parts[3], hz: Number(parts[4]) };
      }
      break;
    case "conference3":
      if (parts.length === 6 && Number(parts[5]) > 0) {
        return { kind: "conference3", stacks: [stack(parts[1]), stack(parts[2]), stack(parts[3])], room: parts[4], hz: Number(parts[5]) };
      }
      break;
    case "early":
      if (parts.length === 4 && parts[2] && Number(parts[3]) > 0) return { kind: "early", stack: stack(parts[1]), number: parts[2], hz: Number(parts[3]) };
      break;
    case "answer":
      if (parts.length === 3 && Number(parts[2]) > 0) return { kind: "answer", stack: stack(parts[1]), hz: Number(parts[2]) };
      break;
    case "webrtc-echo":
    case "webrtc-mdns":
      if (parts.length === 1) return { kind: parts[0] };
      break;
    case "turn-relay":
      if (parts.length === 1) return { kind: "turn-relay" };
      break;
  }
  throw new UsageError(`unknown scenario "${s}"`);
}

// ------------------------------------------------------------------------------------------
// Page assets: page.html, agent.js and the two stacks bundled in memory by esbuild (no shared
// dist/ directory, so parallel runs cannot race on it).
// ------------------------------------------------------------------------------------------
async function buildAssets(esbuild) {
  const bundle = async (entry) => {
    const r = await esbuild.build({
      entryPoints: [path.join(HERE, "src", entry)],
      bundle: true, format: "iife", target: "chrome100", write: false, logLevel: "silent",
      absWorkingDir: HERE,
    });
    return Buffer.from(r.outputFiles[0].contents);
  };
  return {
    "/": { type: "text/html", body: fs.readFileSync(path.join(HERE, "page.html")) },
    "/agent.js": { type: "text/javascript", body: fs.readFileSync(path.join(HERE, "agent.js")) },
    "/dist/sipjs.js": { type: "text/javascript", body: await bundle("sipjs-entry.js") },
    "/dist/jssip.js": { type: "text/javascript", body: await bundle("jssip-entry.js") },
  };
}

function serve(assets) {
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, "http://x").pathname;
    const a = assets[p === "/page.html" ? "/" : p];
    if (p === "/favicon.ico") { res.writeHead(204); res.end(); return; }
    if (!a) { res.writeHead(404, { "content-type": "text/plain" }); res.end("not found"); return; }
    res.writeHead(200, { "content-type": `${a.type}; charset=utf-8`, "cache-control": "no-store" });
    res.end(a.body);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    // 127.0.0.1 (not localhost): an http://127.0.0.1 page is a secure context.
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` }));
  });
}

// 16-bit mono PCM WAV of a sine tone; a whole number of periods so that Chromium's loop is seamless.
function writeTone(file, hz, seconds = 2, rate = 48000, amplitude = 0.3) {
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write("WAVE", 8);
  buf.write("fmt ", 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write("data", 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * amplitude * 32767), 44 + i * 2);
  }
  fs.writeFileSync(file, buf);
}

// ------------------------------------------------------------------------------------------
// Chromium: started by us (so that we control every switch: Playwright's own launcher adds a
// --disable-features list of its own and Chromium honours only the last one), then attached
// with playwright-core over CDP. Each browser has its own profile and its own tone.
// ------------------------------------------------------------------------------------------
const browsers = []; // {name, proc, browser}

async function launchBrowser(pw, opts, name, toneFile, tmp) {
  const profile = fs.mkdtempSync(path.join(tmp, `profile-${name}-`));
  const args = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    // Granting capture (fake UI) also lifts mDNS hiding of local addresses: not with --mdns.
    ...(opts.mdns ? ["--enable-features=WebRtcHideLocalIpsWithMdns"] : ["--use-fake-ui-for-media-stream"]),
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${toneFile}`,
    "--ignore-certificate-errors", "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    // The only --disable-features switch (Chromium keeps just the last one given); kept on
    // (mDNS host candidates, as real browsers send them) when the scenario asks for it.
    ...(opts.mdns ? [] : ["--disable-features=WebRtcHideLocalIpsWithMdns"]),
    `--user-data-dir=${profile}`, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
    "about:blank",
  ];
  const proc = spawn(opts.chromium, args, { stdio: ["ignore", "ignore", "pipe"], detached: true });
  const entry = { name, proc, browser: null, stderr: [] };
  browsers.push(entry);
  const endpoint = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new SetupError(`${name}: Chromium did not print its DevTools endpoint within 15 s\n${entry.stderr.join("")}`)), 15000);
    proc.once("error", (e) => { clearTimeout(timer); reject(new SetupError(`cannot start ${opts.chromium}: ${e.message}`)); });
    proc.once("exit", (code, sig) => { clearTimeout(timer); reject(new SetupError(`${name}: Chromium exited (${code ?? sig}) at start:\n${entry.stderr.join("").slice(-3000)}`)); });
    let buf = "";
    proc.stderr.setEncoding("utf8");
    proc.stderr.on("data", (d) => {
      entry.stderr.push(d);
      if (entry.stderr.length > 200) entry.stderr.shift();
      buf += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(buf);
      if (m) { clearTimeout(timer); buf = ""; resolve(m[1]); }
    });
  });
  entry.browser = await pw.chromium.connectOverCDP(endpoint, { timeout: 10000 });
  return entry;
}

async function closeBrowsers() {
  await Promise.all(browsers.map(async (b) => {
    try { if (b.browser) await Promise.race([b.browser.close(), sleep(2000)]); } catch (_) {}
    await killTree(b.proc);
  }));
  browsers.length = 0;
}

// Chromium runs in its own process group (detached): SIGTERM the group, wait until every process
// of it (renderers, GPU, zygote) is gone, SIGKILL whatever is left after 3 s.
async function killTree(proc) {
  if (!proc || !proc.pid) return;
  const alive = () => { try { process.kill(-proc.pid, 0); return true; } catch (_) { return false; } };
  try { process.kill(-proc.pid, "SIGTERM"); } catch (_) { return; }
  for (let i = 0; i < 30 && alive(); i++) await sleep(100);
  if (alive()) { try { process.kill(-proc.pid, "SIGKILL"); } catch (_) {} }
  for (let i = 0; i < 10 && alive(); i++) await sleep(100);
}

// Last resort if we exit abruptly: no Chromium may outlive the run.
process.on("exit", () => {
  for (const b of browsers) { try { process.kill(-b.proc.pid, "SIGKILL"); } catch (_) {} }
});

// ------------------------------------------------------------------------------------------
// Pages and agents
// ------------------------------------------------------------------------------------------
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Failure(`${what}: no result within ${ms / 1000} s`)), ms); }),
  ]);
}

// "page.evaluate: Error: REGISTER failed: ...\n    at ..." -> "REGISTER failed: ..."
function cleanError(e) {
  const msg = String((e && e.message) || e);
  return msg.replace(/^page\.evaluate:\s*/, "").replace(/^Error:\s*/, "").split("\n    at ")[0].trim();
}

class PageAgent {
  constructor(name, page, opts) {
    this.name = name;
    this.page = page;
    this.opts = opts;
    this.console = [];
    this.sipSeen = 0;
    page.on("console", (m) => this.note(m.type() === "log" || m.type() === "info" ? m.text() : `console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => this.note(`pageerror: ${e.message}`));
    page.on("crash", () => this.note("page crashed"));
  }
  note(line) {
    this.console.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
    if (this.console.length > 5000) this.console.shift();
  }
  async load(origin) {
    await this.page.goto(`${origin}/`, { timeout: 10000 });
    const ok = await this.page.evaluate(() => ({ secure: window.isSecureContext, agent: typeof window.makeAgent, SIP: typeof window.SIP, JsSIP: typeof window.JsSIP }));
    if (!ok.secure || ok.agent !== "function" || ok.SIP !== "object" || ok.JsSIP !== "object") {
      throw new SetupError(`${this.name}: page did not load properly: ${JSON.stringify(ok)}`);
    }
  }
  async create(agentOpts) {
    this.stack = agentOpts.stack;
    await this.page.evaluate((o) => { window.agent = window.makeAgent(o); }, agentOpts);
  }
  async invoke(method, ...args) {
    try {
      return await this.page.evaluate(([m, a]) => window.agent[m](...a), [method, args]);
    } catch (e) {
      throw new Failure(cleanError(e));
    } finally {
      if (this.opts.verbose) await this.printNewSip();
    }
  }
  eval(fn, arg) { return this.page.evaluate(fn, arg); }
  async sipTrace() { return this.page.evaluate(() => window.__sip).catch(() => []); }
  async printNewSip() {
    const all = await this.sipTrace();
    for (const m of all.filter((m) => m.seq > this.sipSeen)) console.log(fmtSip(this.name, m));
    if (all.length) this.sipSeen = Math.max(this.sipSeen, all[all.length - 1].seq);
  }
}

function fmtSip(name, m) {
  const arrow = m.dir === "send" ? ">>>" : m.dir === "recv" ? "<<<" : "---";
  const time = new Date(m.t).toISOString().slice(11, 23);
  const text = m.dir === "event" ? m.text : "\n" + m.text.replace(/\r\n/g, "\n").trimEnd().split("\n").map((l) => "      " + l).join("\n");
  return `  [${name} ws#${m.socket} ${time}] ${arrow} ${text}`;
}

async function dumpPage(pa, { sipCount = 30, consoleCount = 80 } = {}) {
  const sip = await pa.sipTrace();
  console.log(`[browser] ---- ${pa.name} (${pa.stack || "-"}): last ${Math.min(sipCount, sip.length)} of ${sip.length} WebSocket events/SIP messages ----`);
  for (const m of sip.slice(-sipCount)) {
    const t = m.text.length > 2500 ? m.text.slice(0, 2500) + "\n...(truncated)" : m.text;
    console.log(fmtSip(pa.name, { ...m, text: t }));
  }
  console.log(`[browser] ---- ${pa.name}: last ${Math.min(consoleCount, pa.console.length)} console lines (agent, stack logs) ----`);
  for (const l of pa.console.slice(-consoleCount)) {
    const one = l.replace(/\r?\n/g, " \u21b5 ");
    console.log(`  ${one.length > 300 ? one.slice(0, 300) + " ..." : one}`);
  }
}

async function writeArtifacts(dir, pages) {
  fs.mkdirSync(dir, { recursive: true });
  for (const pa of pages) {
    const sip = await pa.sipTrace();
    fs.writeFileSync(path.join(dir, `${pa.name}.sip.txt`), sip.map((m) => fmtSip(pa.name, m)).join("\n") + "\n");
    fs.writeFileSync(path.join(dir, `${pa.name}.console.txt`), pa.console.join("\n") + "\n");
  }
}

// ------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------
async function step(label, ms, fn) {
  const start = Date.now();
  say(`${label} ...`);
  let v;
  try {
    v = await withTimeout(Promise.resolve().then(fn), ms, label);
  } catch (e) {
    throw new Failure(`${label}: ${e instanceof Failure ? e.message.replace(`${label}: `, "") : cleanError(e)}`);
  }
  say(`${label}: ok (${Date.now() - start} ms)${v !== undefined && v !== null && typeof v !== "boolean" ? " " + JSON.stringify(v) : ""}`);
  return v;
}

function agentOpts(ctx, stack, u) {
  return {
    stack, wsUrl: ctx.opts.wss, uri: `sip:${u.user}@${ctx.opts.domain}`,
    username: u.user, password: u.password, iceServers: ctx.iceServers,
  };
}

// Audio must flow and carry energy; with --tone-check the far end's tone must dominate.
// checkAudio, looking up to `looks` times one second apart: on a loaded machine a stream may
// start late, or the echo of something else (DTMF) may still be playing.
async function hears(ctx, pa, label, expectHz, looks = 4) {
  for (let look = 1; ; look++) {
    const s = await withTimeout(pa.invoke("stats"), 5000, `${pa.name}: stats`);
    try {
      return checkAudio(label, s, expectHz, ctx.opts.toneCheck);
    } catch (e) {
      if (!(e instanceof Failure) || look >= looks) throw e;
      say(`${label}: look ${look}: ${e.message}; looking again in 1 s`);
      await sleep(1000);
    }
  }
}

function checkAudio(label, s, expectHz, toneCheck) {
  const problems = [];
  if (!(s.packetsReceived > 0)) problems.push(`no RTP received (packetsReceived=${s.packetsReceived})`);
  if (!(s.totalAudioEnergy > 0 || s.audioLevel > 0)) problems.push(`received audio is silent (totalAudioEnergy=${s.totalAudioEnergy}, audioLevel=${s.audioLevel})`);
  if (!(s.packetsSent > 0)) problems.push(`no RTP sent (packetsSent=${s.packetsSent})`);
  if (toneCheck && expectHz) {
    const a = s.analyser;
    if (!a) problems.push("no WebAudio analysis of the received audio (use --no-tone-check to skip)");
    else if (a.peakHz === null || Math.abs(a.peakHz - expectHz) > 30) problems.push(`received tone peaks at ${a.peakHz} Hz (rms ${a.rms.toFixed(4)}), expected the far end's ${expectHz} Hz`);
  }
  say(`${label} audio: ${s.packetsReceived} pkts in / ${s.packetsSent} out, ${s.codec}, level ${s.audioLevel?.toFixed?.(3)}, energy ${s.totalAudioEnergy?.toFixed?.(4)}, ` +
    `lost ${s.packetsLost}, jitter buffer ${s.jitterBufferMs?.toFixed?.(0)} ms (target ${s.jitterBufferTargetMs?.toFixed?.(0)}), tone ${s.analyser ? `${s.analyser.peakHz} Hz rms ${s.analyser.rms.toFixed(3)}` : "n/a"}, ice ${s.iceConnectionState}, pair ${s.candidatePair}`);
  if (problems.length) throw new Failure(`${label}: ${problems.join("; ")}`);
}

async function newPage(ctx, name, browserIndex) {
  const b = ctx.browsers[browserIndex];
  const context = b.browser.contexts()[0] || (await b.browser.newContext());
  const page = await context.newPage();
  const pa = new PageAgent(name, page, ctx.opts);
  ctx.pages.push(pa);
  await pa.load(ctx.origin);
  return pa;
}

async function scenarioRegisterWrongPassword(ctx, stacks) {
  for (const stack of stacks) {
    const pa = await newPage(ctx, `${stack}-wrongpw`, 0);
    const u = { user: ctx.opts.user1.user, password: ctx.opts.user1.password + "-wrong" };
    await pa.create(agentOpts(ctx, stack, u));
    let err = null;
    await step(`${stack}: REGISTER ${u.user} with a wrong password (must be rejected)`, 15000, async () => {
      try {
        await pa.invoke("register");
      } catch (e) {
        err = e;
        return `rejected: ${e.message}`;
      }
      throw new Failure("the server ACCEPTED a wrong password");
    });
    const trace = await pa.sipTrace();
    const sentRegisters = trace.filter((m) => m.dir === "send" && /^REGISTER /.test(m.text));
    const withAuth = sentRegisters.filter((m) => /^Authorization:\s*Digest /im.test(m.text));
    const failure = await pa.eval(() => window.agent.lastRegisterFailure);
    say(`${stack}: ${sentRegisters.length} REGISTER sent, ${withAuth.length} with Authorization; final: ${JSON.stringify(failure)}`);
    if (!withAuth.length) {
      throw new Failure(`${stack}: the REGISTER failed (${err.message}) but the stack never sent credentials: ` +
        "the server must challenge with 401 and a WWW-Authenticate: Digest that these stacks accept " +
        "(they read only the LAST WWW-Authenticate header and accept only algorithm=MD5 or none; see README)");
    }
    if (!failure || ![401, 403, 407].includes(failure.status)) {
      throw new Failure(`${stack}: after sending credentials the final response was ${failure ? failure.status : "none"}, expected 401 or 403`);
    }
    if (await pa.eval(() => window.agent.isRegistered())) throw new Failure(`${stack}: agent reports registered`);
    await pa.invoke("stop").catch(() => {});
  }
}

async function scenarioRegister(ctx, stack) {
  const pa = await newPage(ctx, `${stack}-${ctx.opts.user1.user}`, 0);
  await pa.create(agentOpts(ctx, stack, ctx.opts.user1));
  await step(`${stack}: REGISTER ${ctx.opts.user1.user}`, 15000, () => pa.invoke("register"));
  if (!(await pa.eval(() => window.agent.isRegistered()))) throw new Failure(`${stack}: not registered after a 2xx`);
  await step(`${stack}: un-REGISTER`, 10000, () => pa.invoke("unregister"));
  await pa.invoke("stop").catch(() => {});
}

// p1 calls p2 (already registered), p2 answers, audio both ways, p1 hangs up. A failure
// message ends with what each side saw of the call (phases of its SIP dialog).
async function talk(ctx, p1, p2) {
  try {
    await talkSteps(ctx, p1, p2);
  } catch (e) {
    const seen = await Promise.all([p1, p2].map((p) => p.eval(() => window.agent.describe()).catch(() => "?")));
    throw new Failure(`${e.message} [${p1.name} ${seen[0]} | ${p2.name} ${seen[1]}]`);
  }
}

async function talkSteps(ctx, p1, p2) {
  const target = `sip:${ctx.opts.user2.user}@${ctx.opts.domain}`;
  const incoming = p2.invoke("waitIncoming");
  incoming.catch(() => {});
  const calling = p1.invoke("call", target);
  calling.catch(() => {});
  // If the call fails before the callee sees an INVITE, report the caller's reason at once.
  await step(`${p2.name}: incoming INVITE`, 15000, () => Promise.race([
    incoming,
    calling.then(() => { throw new Failure("the caller was connected but the callee saw no INVITE"); },
      (e) => { throw new Failure(`the call failed on the caller's side: ${e.message}`); }),
  ]));
  await step(`${p2.name}: answer`, 15000, () => p2.invoke("answer"));
  await step(`${p1.name}: call ${target} established`, 15000, () => calling);
  say(`talking for ${ctx.opts.talk} s`);
  await sleep(ctx.opts.talk * 1000);
  const s1 = await withTimeout(p1.invoke("stats"), 5000, `${p1.name}: stats`);
  const s2 = await withTimeout(p2.invoke("stats"), 5000, `${p2.name}: stats`);
  checkAudio(`${p1.name} (caller)`, s1, p2.toneHz, ctx.opts.toneCheck);
  checkAudio(`${p2.name} (callee)`, s2, p1.toneHz, ctx.opts.toneCheck);
  if (ctx.onStats) { ctx.onStats(`${p1.name} (caller)`, s1); ctx.onStats(`${p2.name} (callee)`, s2); }
  const ended2 = p2.invoke("waitEnded"); ended2.catch(() => {});
  await hangUpService(ctx, p1);
  await step(`${p2.name}: call ended (BYE received)`, 10000, () => ended2);
}

async function unregisterQuietly(pages) {
  for (const pa of pages) {
    try {
      await withTimeout(pa.invoke("unregister"), 5000, "unregister");
    } catch (e) {
      say(`warning: ${pa.name}: un-REGISTER failed: ${cleanError(e)}`);
    }
  }
}

async function scenarioCall(ctx, a, b) {
  const p1 = await newPage(ctx, `caller-${a}`, 0);
  const p2 = await newPage(ctx, `callee-${b}`, 1);
  p1.toneHz = TONES[0]; p2.toneHz = TONES[1];
  await p1.create(agentOpts(ctx, a, ctx.opts.user1));
  await p2.create(agentOpts(ctx, b, ctx.opts.user2));
  await Promise.all([
    step(`${p1.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => p1.invoke("register")),
    step(`${p2.name}: REGISTER ${ctx.opts.user2.user}`, 15000, () => p2.invoke("register")),
  ]);
  await talk(ctx, p1, p2);
  await unregisterQuietly([p1, p2]);
}

// pa calls a number the gateway answers itself (echo, conference): the call must be established.
async function callService(ctx, pa, number) {
  const target = `sip:${number}@${ctx.opts.domain}`;
  await step(`${pa.name}: call ${target} established`, 15000, () => pa.invoke("call", target));
}

// pa hangs up; its BYE must be answered with a 2xx (neither stack fails its hang-up when the
// BYE is refused: look at the wire).
async function hangUpService(ctx, pa) {
  const ended = pa.invoke("waitEnded"); ended.catch(() => {});
  const lastSeq = await pa.eval(() => (window.__sip.length ? window.__sip[window.__sip.length - 1].seq : 0));
  await step(`${pa.name}: hang up`, 10000, () => pa.invoke("hangup"));
  await step(`${pa.name}: call ended`, 10000, () => ended);
  await step(`${pa.name}: BYE answered with 2xx`, 10000, async () => {
    for (;;) {
      const r = await pa.eval((after) => window.__sip.find((m) => m.seq > after && m.dir === "recv" &&
        /^SIP\/2\.0 [2-6]\d\d /.test(m.text) && /^CSeq:\s*\d+\s+BYE\s*$/im.test(m.text)), lastSeq);
      if (r) {
        const status = r.text.split("\r\n")[0];
        if (!/^SIP\/2\.0 2/.test(status)) throw new Failure(`the BYE got "${status.slice(8)}"`);
        return status.slice(8);
      }
      await sleep(100);
    }
  });
}

async function scenarioEcho(ctx, stack, number, hold = false) {
  const pa = await newPage(ctx, `echo-${stack}`, 0);
  await pa.create(agentOpts(ctx, stack, ctx.opts.user1));
  await step(`${pa.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => pa.invoke("register"));
  await callService(ctx, pa, number);
  say(`talking to the echo for ${ctx.opts.talk} s`);
  await sleep(ctx.opts.talk * 1000);
  await hears(ctx, pa, `${pa.name} (echo)`, TONES[0]);
  if (hold) {
    await step(`${pa.name}: hold (re-INVITE sendonly)`, 10000, () => pa.invoke("hold", true));
    await sleep(1000);
    const a = await withTimeout(pa.invoke("stats"), 5000, "stats");
    await sleep(1500);
    const b = await withTimeout(pa.invoke("stats"), 5000, "stats");
    const during = b.packetsReceived - a.packetsReceived;
    say(`${pa.name}: ${during} packets received in 1.5 s on hold`);
    if (during > 10) throw new Failure(`audio kept coming while on hold (${during} packets in 1.5 s)`);
    await step(`${pa.name}: resume (re-INVITE sendrecv)`, 10000, () => pa.invoke("hold", false));
    // 50 packets (1 s of audio) within 2 s, or up to 5 s on a starved machine.
    let after = 0, waited = 0;
    for (waited = 2; ; waited++) {
      await sleep(waited === 2 ? 2000 : 1000);
      const c = await withTimeout(pa.invoke("stats"), 5000, "stats");
      after = c.packetsReceived - b.packetsReceived;
      if (after >= 50 || waited >= 5) break;
    }
    say(`${pa.name}: ${after} packets received in the ${waited} s after resuming`);
    if (after < 50) throw new Failure(`audio did not come back after resuming (${after} packets in ${waited} s)`);
    await hears(ctx, pa, `${pa.name} (echo after resume)`, TONES[0]);
  }
  await hangUpService(ctx, pa);
  await unregisterQuietly([pa]);
}

// pa calls an echo (a trunk that echoes RTP), hears itself, sends DTMF with its stack's API, and
// must still hear itself afterwards. Whoever plays the echo checks what arrived (digits, durations).
async function scenarioDtmf(ctx, stack, number, tones, via) {
  const pa = await newPage(ctx, `dtmf-${stack}`, 0);
  await pa.create(agentOpts(ctx, stack, ctx.opts.user1));
  await step(`${pa.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => pa.invoke("register"));
  await callService(ctx, pa, number);
  await sleep(1000);
  await hears(ctx, pa, `${pa.name} (before DTMF)`, TONES[0]);
  const { dtmfDuration: duration, dtmfGap: gap } = ctx.opts;
  const played = await step(`${pa.name}: DTMF ${tones} via ${via} (${duration} ms tones, ${gap} ms gaps)`, tones.length * (duration + gap) + 10000,
    () => pa.invoke("dtmf", tones, { duration, gap, via }));
  const got = played.map((p) => p.tone).join("");
  if (got.toUpperCase() !== tones.toUpperCase()) throw new Failure(`${pa.name}: the stack played ${got}, asked for ${tones}`);
  console.log(`DTMF SENT ${tones} ${duration} ${gap} ${via}`);
  await sleep(Math.max(0, ctx.opts.talk * 1000 - 1000));
  // The echo plays the digits back (RFC 4733 the browser renders as tones), and a loaded
  // machine may still be playing the last one: on a starved machine the browser's jitter
  // buffer was seen at 0.8 s, the digits still playing 7 s later. Up to eleven more looks,
  // one second apart.
  await hears(ctx, pa, `${pa.name} (after DTMF)`, TONES[0], 12);
  await hangUpService(ctx, pa);
  await unregisterQuietly([pa]);
}

// pa (SIP.js with Supported: 100rel and earlyMedia) calls a number whose far end sends a 183
// with SDP and a tone of HZ, and answers ~2 s later. The 183 must come reliably (Require: 100rel,
// RSeq), SIP.js PRACKs it (RAck) and gets 200; the tone is heard before the answer; the 200 for
// the INVITE comes after the PRACK's and carries no second answer.
async function scenarioEarly(ctx, stack, number, hz) {
  if (stack !== "sipjs") throw new UsageError("early: only SIP.js does 100rel (JsSIP 3.13 has no PRACK)");
  const pa = await newPage(ctx, `early-${stack}`, 0);
  await pa.create({ ...agentOpts(ctx, stack, ctx.opts.user1), rel100: true, earlyMedia: true });
  await step(`${pa.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => pa.invoke("register"));
  const target = `sip:${number}@${ctx.opts.domain}`;
  const established = pa.invoke("call", target);
  established.catch(() => {});
  const find = (dir, re, after = 0) => pa.eval(([d, src, a]) => window.__sip.find((m) => m.seq > a && m.dir === d && new RegExp(src, "im").test(m.text)) || null, [dir, re.source, after]);
  const waitFor = async (dir, re, after = 0) => { for (;;) { const m = await find(dir, re, after); if (m) return m; await sleep(50); } };
  const header = (m, name) => { const h = m.text.split("\r\n").find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`)); return h ? h.slice(name.length + 1).trim() : null; };
  const invite = await step(`${pa.name}: INVITE with Supported: 100rel`, 15000, () => waitFor("send", /^INVITE [^\r\n]*\r\n(?:[^\r\n]+\r\n)*Supported:[^\r\n]*100rel/));
  const progress = await step(`${pa.name}: reliable 183 with our answer`, 15000, async () => {
    const m = await waitFor("recv", /^SIP\/2\.0 183 /, invite.seq);
    if (!/100rel/i.test(header(m, "Require") || "")) throw new Failure(`183 without Require: 100rel:\n${m.text}`);
    if (!/^\d+$/.test(header(m, "RSeq") || "")) throw new Failure(`183 without RSeq:\n${m.text}`);
    if (!/\r\nm=audio /.test(m.text)) throw new Failure(`183 without SDP:\n${m.text}`);
    return { seq: m.seq, rseq: header(m, "RSeq"), cseq: header(m, "CSeq") };
  });
  const prack = await step(`${pa.name}: PRACK (RAck ${progress.rseq} ${progress.cseq})`, 10000, async () => {
    const m = await waitFor("send", /^PRACK /, progress.seq);
    const rack = header(m, "RAck");
    if (rack !== `${progress.rseq} ${progress.cseq}`) throw new Failure(`PRACK with RAck "${rack}", expected "${progress.rseq} ${progress.cseq}"`);
    return { seq: m.seq };
  });
  const prackOk = await step(`${pa.name}: 200 for the PRACK`, 10000, () => waitFor("recv", /^SIP\/2\.0 200 [^]*\r\nCSeq:\s*\d+\s+PRACK\s*\r\n/, prack.seq));
  // The far end answers about 2 s after its 183: listen to the early media before that.
  // ICE and DTLS may take a while on a loaded machine: look every 400 ms until the tone is
  // heard; the answer must not come first.
  await step(`${pa.name}: play the early media`, 5000, () => pa.invoke("listenEarly"));
  const inviteOk = /^SIP\/2\.0 200 [^]*\r\nCSeq:\s*\d+\s+INVITE\s*\r\n/;
  for (let look = 1; ; look++) {
    await sleep(400);
    const answered = await find("recv", inviteOk, invite.seq);
    const early = await withTimeout(pa.invoke("stats"), 5000, `${pa.name}: early stats`);
    try {
      checkAudio(`${pa.name} (early media, look ${look})`, early, hz, ctx.opts.toneCheck);
      if (answered) say(`${pa.name}: warning: answered before the early media was heard`);
      break;
    } catch (e) {
      if (!(e instanceof Failure) || answered) throw new Failure(`no early media before the answer: ${e.message}`);
    }
  }
  await step(`${pa.name}: call established`, 15000, () => established);
  await step(`${pa.name}: 200 for the INVITE after the PRACK's, without SDP`, 5000, async () => {
    const m = await waitFor("recv", /^SIP\/2\.0 200 [^]*\r\nCSeq:\s*\d+\s+INVITE\s*\r\n/, invite.seq);
    if (m.seq < prackOk.seq) throw new Failure("the 200 for the INVITE came before the 200 for the PRACK");
    if (/\r\nm=audio /.test(m.text)) throw new Failure(`the 200 repeats an answer:\n${m.text}`);
    return header(m, "Content-Length");
  });
  await hangUpService(ctx, pa);
  await unregisterQuietly([pa]);
}

async function scenarioJoin(ctx, stack, number, hz) {
  const pa = await newPage(ctx, `join-${stack}`, 0);
  await pa.create(agentOpts(ctx, stack, ctx.opts.user1));
  await step(`${pa.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => pa.invoke("register"));
  await callService(ctx, pa, number);
  say(`in ${number} for ${ctx.opts.talk} s`);
  await sleep(ctx.opts.talk * 1000);
  await hears(ctx, pa, `${pa.name} (in ${number})`, hz);
  await hangUpService(ctx, pa);
  await unregisterQuietly([pa]);
}

// A page for user1 (`stack`) that registers, prints READY, and answers the first incoming call;
// resolves with the page and the call's From / Request-URI.
async function answerFirstCall(ctx, name, stack) {
  const pa = await newPage(ctx, name, 0);
  pa.toneHz = TONES[0];
  await pa.create(agentOpts(ctx, stack, ctx.opts.user1));
  await step(`${pa.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => pa.invoke("register"));
  const incoming = pa.invoke("waitIncoming"); incoming.catch(() => {});
  say("READY");
  const from = await step(`${pa.name}: incoming INVITE`, 30000, () => incoming);
  await step(`${pa.name}: answer`, 15000, () => pa.invoke("answer"));
  return { pa, from };
}

// user1 waits for a call (from a trunk, say), answers it, hears HZ, and waits for the far end's BYE.
async function scenarioAnswer(ctx, stack, hz) {
  const { pa, from } = await answerFirstCall(ctx, `answer-${stack}`, stack);
  say(`${pa.name}: call from ${JSON.stringify(from)}`);
  const ended = pa.invoke("waitEnded"); ended.catch(() => {});
  say(`talking for ${ctx.opts.talk} s`);
  await sleep(ctx.opts.talk * 1000);
  await hears(ctx, pa, `${pa.name} (callee)`, hz);
  await step(`${pa.name}: call ended by the far end`, 20000, () => ended);
  await unregisterQuietly([pa]);
}

// pa answers the first incoming call, hears `hz`, then transfers the caller blind to `target`
// (REFER on its dialog, SIP.js): the NOTIFY must say 200; pa hangs up (prints "TRANSFERRED").
async function scenarioAnswerRefer(ctx, stack, hz, target) {
  const { pa } = await answerFirstCall(ctx, `answer-refer-${stack}`, stack);
  await sleep(ctx.opts.talk * 1000);
  await hears(ctx, pa, `${pa.name} (callee)`, hz);
  const ended = pa.invoke("waitEnded"); ended.catch(() => {});
  const sip = `sip:${target}@${ctx.opts.domain}`;
  const notified = await step(`${pa.name}: blind transfer of the caller to ${sip} (REFER)`, 20000, () => pa.invoke("blindTransfer", sip));
  console.log(`TRANSFERRED ${JSON.stringify(notified)}`);
  await step(`${pa.name}: call ended`, 10000, () => ended);
  await unregisterQuietly([pa]);
}

async function scenarioConference(ctx, a, b) {
  const p1 = await newPage(ctx, `conf-${a}`, 0);
  const p2 = await newPage(ctx, `conf-${b}`, 1);
  await p1.create(agentOpts(ctx, a, ctx.opts.user1));
  await p2.create(agentOpts(ctx, b, ctx.opts.user2));
  await Promise.all([
    step(`${p1.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => p1.invoke("register")),
    step(`${p2.name}: REGISTER ${ctx.opts.user2.user}`, 15000, () => p2.invoke("register")),
  ]);
  await callService(ctx, p1, "700");
  await callService(ctx, p2, "700");
  say(`both in conference 700 for ${ctx.opts.talk} s`);
  await sleep(ctx.opts.talk * 1000);
  const s1 = await withTimeout(p1.invoke("stats"), 5000, `${p1.name}: stats`);
  const s2 = await withTimeout(p2.invoke("stats"), 5000, `${p2.name}: stats`);
  checkAudio(`${p1.name} (conference)`, s1, TONES[1], ctx.opts.toneCheck);
  checkAudio(`${p2.name} (conference)`, s2, TONES[0], ctx.opts.toneCheck);
  await hangUpService(ctx, p1);
  await hangUpService(ctx, p2);
  await unregisterQuietly([p1, p2]);
}

// Attended transfer by the called browser: pa answers the first incoming call (hears `hz`), holds
// it, calls `target` (an echo: hears itself), then REFERs the incoming call with Replaces naming the
// second; the server connects the caller with the target's party and ends the second call.
async function scenarioAnswerAttended(ctx, stack, hz, target) {
  const { pa } = await answerFirstCall(ctx, `answer-attended-${stack}`, stack);
  await sleep(1500);
  await hears(ctx, pa, `${pa.name} (incoming call)`, hz);
  await step(`${pa.name}: hold the incoming call (re-INVITE sendonly)`, 10000, () => pa.invoke("hold", true));
  await pa.invoke("park");
  await callService(ctx, pa, target);
  await sleep(1500);
  await hears(ctx, pa, `${pa.name} (second call, an echo)`, TONES[0]);
  const ended = pa.invoke("waitEnded");
  ended.catch(() => {});
  const notified = await step(`${pa.name}: attended transfer (REFER with Replaces on the incoming call)`, 15000,
    () => pa.invoke("attendedTransfer"));
  console.log(`TRANSFERRED ${JSON.stringify(notified)}`);
  await step(`${pa.name}: the second call ended by the server (replaced)`, 10000, () => ended);
  await unregisterQuietly([pa]);
}

// Attended transfer by the browser: first call (an echo) on hold, second call (a tone of `hz`)
// talking, REFER with Replaces on the first; the server connects the two far parties.
async function scenarioAttended(ctx, stack, first, second, hz) {
  const pa = await newPage(ctx, `attended-${stack}`, 0);
  await pa.create(agentOpts(ctx, stack, ctx.opts.user1));
  await step(`${pa.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => pa.invoke("register"));
  await callService(ctx, pa, first);
  await sleep(1500);
  await hears(ctx, pa, `${pa.name} (first call, an echo)`, TONES[0]);
  await step(`${pa.name}: hold ${first} (re-INVITE sendonly)`, 10000, () => pa.invoke("hold", true));
  await pa.invoke("park");
  await callService(ctx, pa, second);
  await sleep(1500);
  await hears(ctx, pa, `${pa.name} (second call)`, hz);
  const ended = pa.invoke("waitEnded");
  ended.catch(() => {});
  const notified = await step(`${pa.name}: attended transfer (REFER with Replaces on the first call)`, 15000,
    () => pa.invoke("attendedTransfer"));
  console.log(`TRANSFERRED ${JSON.stringify(notified)}`);
  await step(`${pa.name}: the second call ended by the server (replaced)`, 10000, () => ended);
  await unregisterQuietly([pa]);
}

// What `pa` must hear among `all` (Hz): tones in `present` within 9 dB of the strongest and
// 20 dB above the noise floor; tones in `absent` 16 dB or more below the strongest (a tone in the
// mix measures 0 to -3 dB; where there is none, Opus at 32 kbit/s leaves -23 to -65 dB of coding
// noise). Looks up to `looks` times, one second apart (a join beep, a stream starting).
async function expectTones(pa, all, present, absent, looks = 6) {
  let last = null;
  for (let look = 1; ; look++) {
    const l = await withTimeout(pa.invoke("levels", all), 5000, `${pa.name}: levels`);
    last = l;
    const problems = [];
    if (!l) problems.push("no WebAudio analysis of the received audio");
    else {
      for (const hz of present) {
        const db = l.tones[hz];
        if (db === null || db < -9 || db - l.floorDb < 20) problems.push(`${hz} Hz missing (${db} dB, floor ${l.floorDb} dB)`);
      }
      for (const hz of absent) {
        const db = l.tones[hz];
        if (db !== null && db > -16) problems.push(`${hz} Hz heard (${db} dB)`);
      }
    }
    const text = l ? Object.entries(l.tones).map(([hz, db]) => `${hz} Hz ${db} dB`).join(", ") + `, floor ${l.floorDb} dB` : "n/a";
    if (!problems.length) {
      say(`${pa.name}: hears ${present.join(", ")} Hz${absent.length ? `, not ${absent.join(", ")} Hz` : ""} (${text})`);
      return l;
    }
    if (look >= looks) throw new Failure(`${pa.name}: ${problems.join("; ")} (${text})`);
    say(`${pa.name}: look ${look}: ${problems.join("; ")}; looking again in 1 s`);
    await sleep(1000);
  }
}

// Three browsers and a phone (already in the room, playing `hz`) in conference `room`: everyone
// hears everyone else and never itself; the admin API mutes user3, who is then heard by nobody.
async function scenarioConference3(ctx, stacks, room, hz) {
  if (!ctx.opts.admin) throw new UsageError("conference3 needs --admin http://127.0.0.1:PORT");
  const users = [ctx.opts.user1, ctx.opts.user2, ctx.opts.user3];
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const pa = await newPage(ctx, `conf3-${i + 1}-${stacks[i]}`, i);
    pa.toneHz = TONES[i];
    await pa.create(agentOpts(ctx, stacks[i], users[i]));
    pages.push(pa);
  }
  await Promise.all(pages.map((pa, i) => step(`${pa.name}: REGISTER ${users[i].user}`, 15000, () => pa.invoke("register"))));
  for (const pa of pages) await callService(ctx, pa, room);
  say(`three browsers and the phone in conference ${room} for ${ctx.opts.talk} s`);
  await sleep(ctx.opts.talk * 1000);
  const all = [...TONES, hz];
  for (const pa of pages) {
    const s = await withTimeout(pa.invoke("stats"), 5000, `${pa.name}: stats`);
    checkAudio(`${pa.name} (conference)`, s, null, false);
    await expectTones(pa, all, all.filter((t) => t !== pa.toneHz), [pa.toneHz]);
  }
  // Mute user3 through the admin API, found by its label.
  const base = new URL(`/api/conferences/${encodeURIComponent(room)}`, ctx.opts.admin);
  const list = await (await fetch(base)).json();
  say(`GET ${base.pathname}: ${JSON.stringify(list)}`);
  const labels = list.participants.map((p) => p.label);
  for (const u of users) if (!labels.includes(u.user)) throw new Failure(`the admin API lists ${JSON.stringify(labels)}, not ${u.user}`);
  const third = list.participants.find((p) => p.label === users[2].user);
  const r = await fetch(new URL(`${base.pathname}/participants/${third.id}`, ctx.opts.admin), {
    method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify({ muted: true }),
  });
  const changed = await r.json().catch(() => null);
  if (!r.ok || !changed || changed.muted !== true) throw new Failure(`PATCH muted: ${r.status} ${JSON.stringify(changed)}`);
  console.log(`MUTED ${Date.now()}`);
  say(`${users[2].user} (participant ${third.id}) muted through the admin API`);
  await sleep(1500);
  for (const pa of pages.slice(0, 2)) await expectTones(pa, all, all.filter((t) => t !== pa.toneHz && t !== TONES[2]), [pa.toneHz, TONES[2]]);
  await expectTones(pages[2], all, all.filter((t) => t !== TONES[2]), [TONES[2]]);
  console.log(`CONFERENCE CHECKED ${Date.now()}`);
  for (const pa of pages) await hangUpService(ctx, pa);
  await unregisterQuietly(pages);
}

// Both browsers get TURN credentials from the server the way the softphone does, allow only
// relay candidates, and must talk through the server's TURN relays.
async function scenarioTurnRelay(ctx) {
  if (!ctx.opts.http) throw new UsageError("turn-relay needs --http https://HOST:PORT");
  const api = new URL("/api/ice-servers", ctx.opts.http).toString();
  const p1 = await newPage(ctx, "caller-relay", 0);
  const p2 = await newPage(ctx, "callee-relay", 1);
  p1.toneHz = TONES[0]; p2.toneHz = TONES[1];
  for (const [pa, u] of [[p1, ctx.opts.user1], [p2, ctx.opts.user2]]) {
    const list = await step(`${pa.name}: GET /api/ice-servers with ${u.user}'s SIP credentials`, 10000,
      () => pa.eval(([url, user, pass]) => window.fetchIceServers(url, user, pass), [api, u.user, u.password]));
    const servers = list.iceServers || [];
    if (!servers.some((s) => s.username && s.credential)) throw new Failure(`${pa.name}: no TURN credentials in ${JSON.stringify(list)}`);
    say(`${pa.name}: ${JSON.stringify(servers.map((s) => s.urls))}, username ${servers.find((s) => s.username).username}`);
    await pa.create({ ...agentOpts(ctx, "sipjs", u), iceServers: servers, iceTransportPolicy: "relay" });
  }
  await Promise.all([
    step(`${p1.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => p1.invoke("register")),
    step(`${p2.name}: REGISTER ${ctx.opts.user2.user}`, 15000, () => p2.invoke("register")),
  ]);
  ctx.onStats = (label, s) => {
    if (!s.candidatePair || !/^relay /.test(s.candidatePair)) throw new Failure(`${label}: selected candidate pair is not relayed: ${s.candidatePair}`);
  };
  await talk(ctx, p1, p2);
  await unregisterQuietly([p1, p2]);
}

async function scenarioReconnect(ctx, stack) {
  const p1 = await newPage(ctx, `caller-${stack}`, 0);
  const p2 = await newPage(ctx, `reconnecting-${stack}`, 1);
  p1.toneHz = TONES[0]; p2.toneHz = TONES[1];
  await p1.create(agentOpts(ctx, stack, ctx.opts.user1));
  await p2.create(agentOpts(ctx, stack, ctx.opts.user2));
  await step(`${p2.name}: REGISTER ${ctx.opts.user2.user}`, 15000, () => p2.invoke("register"));
  const { lastId } = await step(`${p2.name}: kill its WebSocket`, 5000, async () => {
    const r = await p2.eval(() => window.__killSockets());
    if (!r.killed.length) throw new Failure("no open WebSocket to kill");
    return r;
  });
  await step(`${p2.name}: reconnects and re-REGISTERs by itself`, 20000, async () => {
    for (;;) {
      const r = await p2.eval((n) => ({ ok: window.__regOk.filter((x) => x.socket > n), sockets: window.__sockets.length }), lastId);
      if (r.ok.length) return `2xx to REGISTER on new socket ws#${r.ok[0].socket} (${r.sockets} sockets opened)`;
      await sleep(250);
    }
  });
  await step(`${p1.name}: REGISTER ${ctx.opts.user1.user}`, 15000, () => p1.invoke("register"));
  await talk(ctx, p1, p2);
  await unregisterQuietly([p1, p2]);
}

// No server: the page sends its fake microphone through a local RTCPeerConnection pair and
// measures what arrives, with the same stats/analyser code as agent.js calls.
// One line from stdin (the media leg under test answers through it).
function readLine() {
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (d) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl >= 0) { cleanup(); resolve(buf.slice(0, nl)); }
    };
    const onEnd = () => { cleanup(); reject(new Failure("stdin closed before an answer came")); };
    const cleanup = () => { process.stdin.off("data", onData); process.stdin.off("end", onEnd); process.stdin.pause(); };
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", onData);
    process.stdin.on("end", onEnd);
    process.stdin.resume();
  });
}

// The page offers (fake microphone, TONES[0]); whoever reads our stdout answers on stdin; the
// page must get its own tone back (an echo room behind the answering WebRTC leg).
async function scenarioWebrtcEcho(ctx) {
  const pa = await newPage(ctx, "webrtc", 0);
  const offer = await step("offer from Chromium (ICE gathering complete)", 15000, () => pa.eval(async ({ mdns, hz }) => {
    const pc = new RTCPeerConnection({ iceServers: [] });
    window.__pc = pc;
    let mic;
    if (mdns) {
      // No getUserMedia: a page without capture permission hides its addresses behind mDNS
      // names, as every real browser does. The tone comes from WebAudio instead.
      const ac = new AudioContext({ sampleRate: 48000 });
      const osc = ac.createOscillator();
      const gain = ac.createGain();
      osc.frequency.value = hz;
      gain.gain.value = 0.3;
      const dst = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dst);
      osc.start();
      mic = dst.stream;
    } else {
      mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false }, video: false });
    }
    mic.getTracks().forEach((t) => pc.addTrack(t, mic));
    window.__gotTrack = new Promise((r) => (pc.ontrack = r));
    await pc.setLocalDescription(await pc.createOffer());
    if (pc.iceGatheringState !== "complete") {
      await new Promise((r) => { pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); setTimeout(r, 5000); });
    }
    return pc.localDescription.sdp;
  }, { mdns: !!ctx.opts.mdns, hz: TONES[0] }));
  const hosts = [...offer.matchAll(/a=candidate:\S+ 1 udp \d+ (\S+) \d+ typ host/g)].map((m) => m[1]);
  say(`offer has host candidates ${hosts.join(", ") || "(none)"}`);
  if (ctx.opts.mdns && !hosts.some((h) => h.endsWith(".local"))) throw new Failure("expected mDNS (.local) host candidates in the offer");
  process.stdout.write(`OFFER ${JSON.stringify(offer)}\n`);
  const line = await withTimeout(readLine(), 15000, "answer on stdin");
  if (!line.startsWith("ANSWER ")) throw new Failure(`expected "ANSWER <json>" on stdin, got ${line.slice(0, 80)}`);
  const answer = JSON.parse(line.slice(7));
  const s = await step("connect and talk to the echo", 20000, () => pa.eval(async ({ answer, talkMs }) => {
    const pc = window.__pc;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    await window.__gotTrack;
    const t0 = Date.now();
    while (pc.connectionState !== "connected") {
      if (pc.connectionState === "failed" || Date.now() - t0 > 10000) throw new Error(`connection ${pc.connectionState}, ICE ${pc.iceConnectionState}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const fake = window.makeAgent({ stack: "sipjs", wsUrl: "wss://127.0.0.1:9", uri: "sip:webrtc@invalid" });
    fake.peerConnection = () => pc;
    fake.track({});
    fake.onEstablished();
    await new Promise((r) => setTimeout(r, talkMs));
    const st = await fake.stats();
    pc.close();
    return st;
  }, { answer, talkMs: ctx.opts.talk * 1000 }));
  checkAudio("webrtc echo", s, TONES[0], ctx.opts.toneCheck);
}

async function scenarioSelftest(ctx) {
  const pa = await newPage(ctx, "selftest", 0);
  const s = await step("local RTCPeerConnection pair with the fake microphone", 15000, () => pa.eval(async (talkMs) => {
    const a = new RTCPeerConnection({ iceServers: [] }), b = new RTCPeerConnection({ iceServers: [] });
    a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false }, video: false });
    mic.getTracks().forEach((t) => a.addTrack(t, mic));
    const gotTrack = new Promise((r) => (b.ontrack = r));
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    await gotTrack;
    // Reuse agent.js' media helpers through a throwaway agent object.
    const fake = window.makeAgent({ stack: "sipjs", wsUrl: "wss://127.0.0.1:9", uri: "sip:selftest@invalid" });
    fake.peerConnection = () => b;
    fake.track({});
    fake.onEstablished();
    await new Promise((r) => setTimeout(r, talkMs));
    const st = await fake.stats();
    const out = await a.getStats();
    out.forEach((x) => { if (x.type === "outbound-rtp") st.packetsSent = x.packetsSent; });
    return st;
  }, ctx.opts.talk * 1000));
  checkAudio("selftest", s, TONES[0], ctx.opts.toneCheck);
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------
async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`run.mjs: ${e.message}\n\n${USAGE}`);
    return 2;
  }
  let pw, esbuild;
  try {
    pw = await import("playwright-core");
    esbuild = await import("esbuild");
  } catch (e) {
    console.error(`[browser] SETUP ERROR: cannot load node modules (${e.message}); run \`npm ci\` in ${HERE}`);
    return 2;
  }
  const assets = await buildAssets(esbuild);
  const { server, origin } = await serve(assets);
  if (opts.serveOnly) {
    say(`serving ${origin}/ (Ctrl-C to stop)`);
    await new Promise(() => {});
  }

  let scenario;
  try {
    scenario = parseScenario(opts.scenario);
  } catch (e) {
    console.error(`run.mjs: ${e.message}\n\n${USAGE}`);
    server.close();
    return 2;
  }
  if (!fs.existsSync(opts.chromium)) {
    console.error(`[browser] SETUP ERROR: Chromium not found at ${opts.chromium} (apt-get install -y chromium, or --chromium PATH)`);
    server.close();
    return 2;
  }

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "sb-browser-"));
  if (scenario.kind === "webrtc-mdns") opts.mdns = true;
  const ctx = { opts, origin, pages: [], browsers: [], iceServers: [] };
  let status = 0;
  let deadline;
  const cleanup = async () => {
    if (opts.artifacts && ctx.pages.length) await writeArtifacts(opts.artifacts, ctx.pages).catch((e) => say(`cannot write artifacts: ${e.message}`));
    await closeBrowsers();
    server.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.once(sig, () => { say(`${sig}: stopping`); cleanup().finally(() => process.exit(1)); });
  }
  try {
    say(`scenario ${opts.scenario}: server ${opts.wss || "-"}, domain ${opts.domain || "-"}, page origin ${origin}, bound ${opts.timeout} s`);
    if (opts.iceServers === "api") {
      if (!opts.http) throw new UsageError("--ice-servers api needs --http");
      const r = await fetch(new URL("/api/ice-servers", opts.http));
      if (!r.ok) throw new SetupError(`GET /api/ice-servers: ${r.status}`);
      const j = await r.json();
      ctx.iceServers = Array.isArray(j) ? j : j.iceServers;
    } else {
      ctx.iceServers = JSON.parse(opts.iceServers);
    }
    const run = async () => {
      const need = scenario.kind === "conference3" ? 3
        : ["call", "reconnect", "conference", "turn-relay"].includes(scenario.kind) ? 2 : 1;
      for (let i = 0; i < need; i++) {
        const tone = path.join(tmp, `tone-${TONES[i]}hz.wav`);
        writeTone(tone, TONES[i]);
        const b = await launchBrowser(pw, opts, `chromium${i + 1}`, tone, tmp);
        ctx.browsers.push(b);
        if (i === 0) say(`Chromium ${b.browser.version()} started (pid ${b.proc.pid}, fake microphone ${TONES[i]} Hz)`);
        else say(`Chromium ${i + 1} started (pid ${b.proc.pid}, fake microphone ${TONES[i]} Hz)`);
      }
      switch (scenario.kind) {
        case "register-wrong-password": return scenarioRegisterWrongPassword(ctx, scenario.stacks);
        case "register": return scenarioRegister(ctx, scenario.stack);
        case "call": return scenarioCall(ctx, scenario.a, scenario.b);
        case "reconnect": return scenarioReconnect(ctx, scenario.stack);
        case "selftest": return scenarioSelftest(ctx);
        case "webrtc-echo": case "webrtc-mdns": return scenarioWebrtcEcho(ctx);
        case "echo": return scenarioEcho(ctx, scenario.stack, scenario.number);
        case "echo-hold": return scenarioEcho(ctx, scenario.stack, scenario.number, true);
        case "dtmf": return scenarioDtmf(ctx, scenario.stack, scenario.number, scenario.tones, scenario.via);
        case "conference": return scenarioConference(ctx, scenario.a, scenario.b);
        case "answer-refer": return scenarioAnswerRefer(ctx, scenario.stack, scenario.hz, scenario.target);
        case "answer-attended": return scenarioAnswerAttended(ctx, scenario.stack, scenario.hz, scenario.target);
        case "attended": return scenarioAttended(ctx, scenario.stack, scenario.first, scenario.second, scenario.hz);
        case "conference3": return scenarioConference3(ctx, scenario.stacks, scenario.room, scenario.hz);
        case "answer": return scenarioAnswer(ctx, scenario.stack, scenario.hz);
        case "early": return scenarioEarly(ctx, scenario.stack, scenario.number, scenario.hz);
        case "join": return scenarioJoin(ctx, scenario.stack, scenario.number, scenario.hz);
        case "turn-relay": return scenarioTurnRelay(ctx);
      }
    };
    await Promise.race([
      run(),
      new Promise((_, reject) => { deadline = setTimeout(() => reject(new Failure(`the whole run exceeded ${opts.timeout} s`)), opts.timeout * 1000); }),
    ]);
    say(`PASS ${opts.scenario}`);
  } catch (e) {
    status = e instanceof SetupError || e instanceof UsageError ? 2 : 1;
    say(`${status === 2 ? "SETUP ERROR" : "FAIL"} ${opts.scenario}: ${e instanceof Failure || e instanceof SetupError || e instanceof UsageError ? e.message : e.stack || e}`);
    for (const pa of ctx.pages) await withTimeout(dumpPage(pa), 5000, "dump").catch(() => {});
    if (ctx.pages.length) say(`FAIL ${opts.scenario}: ${e.message}`); // repeat the reason after the dumps
  } finally {
    clearTimeout(deadline);
    await withTimeout(cleanup(), 10000, "cleanup").catch((e) => say(`cleanup: ${e.message}`));
  }
  return status;
}

main().then((code) => process.exit(code), (e) => { console.error(`[browser] internal error: ${e.stack || e}`); process.exit(2); });
