// Unit tests of the softphone's pure parts: `node --test web/test/unit.test.mjs` (run by
// `cargo test --test softphone`, test `web_unit_tests_pass`).
import assert from "node:assert/strict";
import { test } from "node:test";

if (!globalThis.crypto) globalThis.crypto = (await import("node:crypto")).webcrypto; // node 18

const { md5Hex } = await import("../src/md5.js");
const { parseChallenges, digestAuthorization, normalise } = await import("../src/ice.js");
const { backoff, registerFailureText, targetUri } = await import("../src/phone.js");
const { meterScale } = await import("../src/audio.js");

test("md5 matches node's", async () => {
  const { createHash } = await import("node:crypto");
  for (const s of ["", "abc", "a".repeat(55), "a".repeat(56), "a".repeat(64), "héllo wörld ".repeat(20)]) {
    assert.equal(md5Hex(s), createHash("md5").update(s).digest("hex"));
  }
});

test("WWW-Authenticate values joined by Headers.get are split into challenges", () => {
  const joined = 'Digest realm="example.org", nonce="n1,x", qop="auth", algorithm=SHA-256, opaque="o", Digest realm="example.org", nonce="n2", qop="auth", algorithm=MD5';
  const c = parseChallenges(joined);
  assert.equal(c.length, 2);
  assert.deepEqual(c[0], { scheme: "Digest", params: { realm: "example.org", nonce: "n1,x", qop: "auth", algorithm: "SHA-256", opaque: "o" } });
  assert.equal(c[1].params.algorithm, "MD5");
  assert.equal(c[1].params.nonce, "n2");
});

// RFC 7616 §3.9.1.
const RFC = {
  params: { realm: "http-auth@example.org", qop: "auth, auth-int", nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque: "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS" },
  creds: { username: "Mufasa", password: "Circle of Life", method: "GET", uri: "/dir/index.html", cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ" },
};

test("digest response: RFC 7616 example, MD5 and SHA-256", async () => {
  const md5 = await digestAuthorization({ scheme: "Digest", params: { ...RFC.params, algorithm: "MD5" } }, RFC.creds);
  assert.match(md5, /response="8ca523f5e9506fed4657c9700eebdbec"/);
  const sha = await digestAuthorization({ scheme: "Digest", params: { ...RFC.params, algorithm: "SHA-256" } }, RFC.creds);
  assert.match(sha, /response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"/);
  assert.match(sha, /qop=auth, nc=00000001, cnonce="f2\/wE4q74E6zIJEtWaHKaf5wv\/H5QzzpXusqGemxURZJ"/);
  assert.match(sha, /opaque="FQhe\/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"/);
});

test("ICE server answers in every accepted shape", () => {
  const turn = { urls: ["turn:h:3478?transport=udp"], username: "1:1001@d", credential: "p" };
  assert.deepEqual(normalise({ iceServers: [{ urls: ["stun:h:3478"] }, turn], ttl: 86400 }), { servers: [{ urls: ["stun:h:3478"] }, turn], ttl: 86400 });
  assert.deepEqual(normalise([turn]), { servers: [turn], ttl: null });
  assert.deepEqual(normalise({ uris: ["turn:h"], username: "u", password: "p", ttl: 60 }), { servers: [{ urls: ["turn:h"], username: "u", credential: "p" }], ttl: 60 });
  assert.deepEqual(normalise({ nonsense: true }), { servers: [], ttl: null });
  assert.deepEqual(normalise(null), { servers: [], ttl: null });
});

test("what the user types becomes a SIP URI", () => {
  assert.equal(targetUri("1002", "example.org").toString(), "sip:1002@example.org");
  assert.equal(targetUri(" +1 (555) 123-4567 ", "d").toString(), "sip:+15551234567@d");
  assert.equal(targetUri("alice", "d").toString(), "sip:alice@d");
  assert.equal(targetUri("sip:bob@example.com", "d").toString(), "sip:bob@example.com");
  assert.equal(targetUri("", "d"), null);
});

test("backoff grows to 30 s with jitter", () => {
  for (let i = 0; i < 50; i++) {
    const d1 = backoff(1), d5 = backoff(5), d20 = backoff(20);
    assert.ok(d1 >= 0.8 && d1 <= 1.2, d1);
    assert.ok(d5 >= 12.8 && d5 <= 19.2, d5);
    assert.ok(d20 >= 24 && d20 <= 36, d20);
  }
});

test("registration failures in plain words", () => {
  assert.equal(registerFailureText(401, "Unauthorized"), "wrong username or password");
  assert.equal(registerFailureText(403, "Forbidden"), "wrong username or password");
  assert.equal(registerFailureText(404, "Not Found"), "unknown user");
  assert.match(registerFailureText(503, "Service Unavailable"), /busy/);
});

test("meter scale: -60..0 dBFS to 0..1", () => {
  assert.equal(meterScale(0), 0);
  assert.equal(meterScale(1), 1);
  assert.ok(Math.abs(meterScale(0.001) - 0) < 1e-9);
  assert.ok(Math.abs(meterScale(0.0316) - 0.5) < 0.01);
});
