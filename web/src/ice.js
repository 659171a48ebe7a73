// ICE servers for calls: `GET /api/ice-servers` on the server that served this page, which
// hands out STUN/TURN URLs with short-lived TURN credentials to a caller that proves its SIP
// identity with HTTP Digest (RFC 7616). SHA-256 is answered with WebCrypto, MD5 with md5.js.
// Anything unexpected (404: TURN disabled, network error, unknown scheme) degrades to no ICE
// servers: calls then use host candidates only, which is what a LAN or the loopback needs.

import { md5Hex } from "./md5.js";

const PATH = "/api/ice-servers";

/**
 * Parses a WWW-Authenticate value (possibly several challenges joined by ", ", as
 * `Headers.get` does) into [{scheme, params: {name: value}}].
 */
export function parseChallenges(header) {
  const out = [];
  let i = 0;
  const s = header || "";
  const skip = () => { while (i < s.length && /[\s,]/.test(s[i])) i++; };
  while (i < s.length) {
    skip();
    const m = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(s.slice(i));
    if (!m) { i++; continue; }
    const token = m[0];
    i += token.length;
    let j = i;
    while (j < s.length && s[j] === " ") j++;
    if (s[j] === "=" && out.length) {
      // name=value (value quoted or a token)
      i = j + 1;
      while (s[i] === " ") i++;
      let value = "";
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === "\\" && i + 1 < s.length) i++;
          value += s[i++];
        }
        i++;
      } else {
        const v = /^[^,\s]*/.exec(s.slice(i))[0];
        value = v;
        i += v.length;
      }
      out[out.length - 1].params[token.toLowerCase()] = value;
    } else {
      out.push({ scheme: token, params: {} });
    }
  }
  return out;
}

const toHex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");

async function hashHex(algorithm, text) {
  if (algorithm === "MD5") return md5Hex(text);
  const name = algorithm === "SHA-256" ? "SHA-256" : null;
  if (!name || !globalThis.crypto?.subtle) throw new Error(`digest algorithm ${algorithm} unsupported here`);
  return toHex(await crypto.subtle.digest(name, new TextEncoder().encode(text)));
}

/** The Authorization header answering `challenge` (a parsed Digest challenge) for GET `uri`. */
export async function digestAuthorization(challenge, { username, password, method, uri, cnonce: fixedCnonce }) {
  const p = challenge.params;
  const full = (p.algorithm || "MD5").toUpperCase();
  const sess = full.endsWith("-SESS");
  const algorithm = sess ? full.slice(0, -5) : full;
  const qops = (p.qop || "").split(",").map((q) => q.trim().toLowerCase()).filter(Boolean);
  const qop = qops.includes("auth") ? "auth" : null;
  if (qops.length && !qop) throw new Error(`digest qop "${p.qop}" unsupported`);
  const cnonce = fixedCnonce || toHex(crypto.getRandomValues(new Uint8Array(12)));
  const nc = "00000001";
  let ha1 = await hashHex(algorithm, `${username}:${p.realm}:${password}`);
  if (sess) ha1 = await hashHex(algorithm, `${ha1}:${p.nonce}:${cnonce}`);
  const ha2 = await hashHex(algorithm, `${method}:${uri}`);
  const response = qop
    ? await hashHex(algorithm, `${ha1}:${p.nonce}:${nc}:${cnonce}:${qop}:${ha2}`)
    : await hashHex(algorithm, `${ha1}:${p.nonce}:${ha2}`);
  const q = (v) => `"${String(v).replace(/["\\]/g, "\\$&")}"`;
  let h = `Digest username=${q(username)}, realm=${q(p.realm)}, nonce=${q(p.nonce)}, uri=${q(uri)}, ` +
    `algorithm=${p.algorithm || "MD5"}, response=${q(response)}`;
  if (qop) h += `, qop=${qop}, nc=${nc}, cnonce=${q(cnonce)}`;
  if (p.opaque !== undefined) h += `, opaque=${q(p.opaque)}`;
  return h;
}

/** Prefers SHA-256 (WebCrypto) over MD5; null when no Digest challenge can be answered. */
function pickChallenge(challenges) {
  const digest = challenges.filter((c) => c.scheme.toLowerCase() === "digest" && c.params.nonce !== undefined);
  const alg = (c) => (c.params.algorithm || "MD5").toUpperCase().replace(/-SESS$/, "");
  const canSha = !!globalThis.crypto?.subtle;
  return digest.find((c) => alg(c) === "SHA-256" && canSha) || digest.find((c) => alg(c) === "MD5") || null;
}

/** Normalises the answer's formats to an RTCIceServer list and a lifetime in seconds. */
export function normalise(body) {
  let servers = [];
  let ttl = null;
  if (Array.isArray(body)) servers = body;
  else if (body && Array.isArray(body.iceServers)) { servers = body.iceServers; ttl = body.ttl; }
  else if (body && Array.isArray(body.uris)) {
    // TURN REST API draft: {username, password, ttl, uris}
    servers = [{ urls: body.uris, username: body.username, credential: body.password }];
    ttl = body.ttl;
  }
  servers = servers
    .filter((s) => s && (typeof s.urls === "string" || Array.isArray(s.urls) || typeof s.url === "string"))
    .map((s) => {
      const out = { urls: s.urls ?? s.url };
      if (s.username !== undefined) out.username = String(s.username);
      if (s.credential !== undefined) out.credential = String(s.credential);
      return out;
    });
  return { servers, ttl: Number.isFinite(Number(ttl)) && Number(ttl) > 0 ? Number(ttl) : null };
}

/**
 * Fetches and caches the ICE servers for one logged-in user. `get()` never throws: it returns
 * the cached list while it is fresh (half its lifetime), else fetches again, else [] .
 */
export class IceServers {
  constructor({ username, password, domain, log = () => {} }) {
    this.username = username;
    this.password = password;
    this.domain = domain;
    this.log = log;
    this.servers = [];
    this.freshUntil = 0;
    this.pending = null;
    /** Human-readable outcome of the last fetch, for the UI ("2 servers", "not offered"). */
    this.summary = "not fetched";
  }

  async get() {
    if (Date.now() < this.freshUntil) return this.servers;
    if (!this.pending) this.pending = this.fetch().finally(() => { this.pending = null; });
    return this.pending;
  }

  async fetch() {
    const uri = `${PATH}?domain=${encodeURIComponent(this.domain)}`;
    const get = (headers) => fetch(uri, { credentials: "omit", cache: "no-store", headers });
    try {
      let r = await get({});
      if (r.status === 401) {
        const challenge = pickChallenge(parseChallenges(r.headers.get("www-authenticate")));
        if (!challenge) throw new Error("no Digest challenge this page can answer");
        const authorization = await digestAuthorization(challenge, {
          username: this.username, password: this.password, method: "GET", uri,
        });
        r = await get({ Authorization: authorization });
      }
      if (r.status === 404) {
        this.summary = "not offered by this server";
        this.log(`ICE servers: ${PATH} not available (404): calls use host candidates only`);
        this.servers = [];
        this.freshUntil = Date.now() + 10 * 60 * 1000;
        return this.servers;
      }
      if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
      const { servers, ttl } = normalise(await r.json());
      this.servers = servers;
      this.freshUntil = Date.now() + (ttl ? Math.min(ttl * 500, 6 * 3600 * 1000) : 10 * 60 * 1000);
      this.summary = `${servers.length} server${servers.length === 1 ? "" : "s"}`;
      this.log(`ICE servers: ${servers.map((s) => [].concat(s.urls).join(" ")).join(", ") || "none"}`);
      return this.servers;
    } catch (e) {
      this.summary = `unavailable (${e.message})`;
      this.log(`ICE servers: ${e.message}; calls use host candidates only`);
      // Try again soon, but not on every call attempt.
      this.freshUntil = Date.now() + 30 * 1000;
      return this.servers;
    }
  }
}
