// What the page keeps in the browser: the login (only when the user ticks "Remember me"),
// audio settings, and the recent-calls list. Everything lives in localStorage under "sb.*";
// a browser that refuses storage (private mode, quota) just forgets.

const KEY_LOGIN = "sb.login";
const KEY_SETTINGS = "sb.settings";
const KEY_RECENT = "sb.recent";
const MAX_RECENT = 50;

function read(key, fallback) {
  try {
    const v = localStorage.getItem(key);
    return v === null ? fallback : JSON.parse(v);
  } catch (_) {
    return fallback;
  }
}

function write(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch (_) {
    /* storage unavailable: nothing is remembered */
  }
}

/** The remembered login ({username, password, wsUrl, domain, processing}) or null. */
export const loadLogin = () => read(KEY_LOGIN, null);
/** Remembers a login; `null` forgets it. */
export const saveLogin = (login) => write(KEY_LOGIN, login);

/** Audio settings: {micId, speakerId, volume (0..1)}. */
export const loadSettings = () => ({ micId: "", speakerId: "", volume: 1, ...read(KEY_SETTINGS, {}) });
export const saveSettings = (s) => write(KEY_SETTINGS, s);

/**
 * Recent calls, newest first: {direction: "in"|"out", target, name, number, start (ms epoch),
 * duration (s, 0 if never connected), result: "answered"|"missed"|"declined"|"failed"|"cancelled",
 * reason}.
 */
export const loadRecent = () => {
  const list = read(KEY_RECENT, []);
  return Array.isArray(list) ? list : [];
};
export function addRecent(entry) {
  const list = [entry, ...loadRecent()].slice(0, MAX_RECENT);
  write(KEY_RECENT, list);
  return list;
}
export const clearRecent = () => write(KEY_RECENT, null);
