// Bundled by esbuild into dist/sipjs.js (IIFE): exposes the SIP.js 0.21 API as window.SIP.
import * as SIP from "sip.js";
window.SIP = SIP;
