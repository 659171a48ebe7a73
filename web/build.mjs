#!/usr/bin/env node
// Builds the softphone into OUTDIR: index.html, favicon.svg and assets/app-HASH.{js,css} (plus
// .gz siblings of the larger files). Hashed names may be cached forever; index.html may not.
//
//   node build.mjs --outdir dist            (npm run build; what the Dockerfile does)
//   node build.mjs --outdir dist --dev      (no minification, inline source maps)
//   node build.mjs --outdir dist --dev --watch
//
// The Rust build (build.rs) runs this into its OUT_DIR and embeds the result in the binary;
// `switchboard serve --web-root web/dist` serves a directory instead (front-end development).
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const HERE = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const o = { outdir: path.join(HERE, "dist"), dev: false, watch: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--outdir") o.outdir = path.resolve(argv[++i] ?? "");
    else if (a === "--dev") o.dev = true;
    else if (a === "--watch") o.watch = true;
    else {
      console.error(`build.mjs: unknown argument ${a}\nusage: node build.mjs [--outdir DIR] [--dev] [--watch]`);
      process.exit(2);
    }
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));

/** esbuild options: one JS and one CSS bundle with content hashes in their names. */
const config = {
  absWorkingDir: HERE,
  entryPoints: { app: "src/main.js", style: "src/style.css" },
  bundle: true,
  format: "esm",
  // Current Chrome, Firefox and Safari (WebRTC, private class fields, optional chaining).
  target: ["chrome100", "firefox100", "safari15"],
  minify: !opts.dev,
  sourcemap: opts.dev ? "inline" : false,
  legalComments: "linked",
  entryNames: "assets/[name]-[hash]",
  outdir: opts.outdir,
  metafile: true,
  write: true,
  logLevel: "warning",
};

/** Writes index.html with the hashed asset names, copies static files, gzips large files. */
function finish(result) {
  const outputs = Object.keys(result.metafile.outputs).map((p) => path.relative(opts.outdir, path.resolve(HERE, p)));
  const js = outputs.find((p) => /^assets\/app-[A-Z0-9]+\.js$/.test(p));
  const css = outputs.find((p) => /^assets\/style-[A-Z0-9]+\.css$/.test(p));
  if (!js || !css) throw new Error(`build.mjs: unexpected esbuild outputs ${outputs.join(", ")}`);
  // Remove stale hashed files from earlier builds into the same directory.
  const assets = path.join(opts.outdir, "assets");
  for (const f of fs.readdirSync(assets)) {
    const rel = `assets/${f}`;
    if (!outputs.some((o) => rel === o || rel === `${o}.gz`)) fs.rmSync(path.join(assets, f));
  }
  const html = fs.readFileSync(path.join(HERE, "index.html"), "utf8")
    .replaceAll("{{APP_JS}}", `/${js}`)
    .replaceAll("{{APP_CSS}}", `/${css}`);
  fs.writeFileSync(path.join(opts.outdir, "index.html"), html);
  fs.copyFileSync(path.join(HERE, "favicon.svg"), path.join(opts.outdir, "favicon.svg"));
  for (const rel of [js, css]) {
    const file = path.join(opts.outdir, rel);
    const body = fs.readFileSync(file);
    if (body.length > 1024) fs.writeFileSync(`${file}.gz`, zlib.gzipSync(body, { level: 9 }));
  }
  const size = (rel) => `${(fs.statSync(path.join(opts.outdir, rel)).size / 1024).toFixed(0)} KiB`;
  console.log(`build.mjs: ${opts.outdir}: index.html, /${js} (${size(js)}), /${css} (${size(css)})`);
}

fs.mkdirSync(path.join(opts.outdir, "assets"), { recursive: true });
if (opts.watch) {
  const ctx = await esbuild.context({
    ...config,
    plugins: [{ name: "finish", setup: (b) => b.onEnd((r) => { if (!r.errors.length) finish(r); }) }],
  });
  await ctx.watch();
  console.log("build.mjs: watching src/ (Ctrl-C to stop)");
} else {
  try {
    finish(await esbuild.build(config));
  } catch (e) {
    console.error(`build.mjs: ${e.message}`);
    process.exit(1);
  }
}
