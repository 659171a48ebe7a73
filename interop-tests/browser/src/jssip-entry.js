// Bundled by esbuild into dist/jssip.js (IIFE): JsSIP 3.13 ships CommonJS only, so the page
// cannot load it directly; exposes it as window.JsSIP.
import JsSIP from "jssip";
window.JsSIP = JsSIP;
