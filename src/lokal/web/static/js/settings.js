// Settings survive a reload through localStorage; the API key only lives in sessionStorage (this tab),
// so a shared machine does not keep it on disk after the browser closes.

const KEY = "lokal.playground.settings";
const SECRET = "lokal.playground.apiKey";

export const DEFAULTS = {
  temperature: 0.7,
  maxTokens: 256,
  system: "",
  modelA: "",
  modelB: "",
  compare: false,
  ragMode: "off",
  ragText: "",
  ragCollection: "",
  ragK: 4,
  ragSearchMode: "hybrid",
  engineA: "server", // or "browser": the pane runs its model in this page
  engineB: "server",
  ragRank: false, // pasted text: rank passages with MiniLM in the page and keep the top ragTextK
  ragTextK: 3,
};

function safe(storage, fn, fallback) {
  try {
    return fn(storage);
  } catch {
    return fallback; // storage disabled (private mode, file://): the page still works, it just forgets
  }
}

export function loadSettings() {
  const saved = safe(localStorage, (s) => JSON.parse(s.getItem(KEY) ?? "{}"), {});
  return { ...DEFAULTS, ...(saved && typeof saved === "object" ? saved : {}) };
}

export function saveSettings(settings) {
  safe(localStorage, (s) => s.setItem(KEY, JSON.stringify(settings)));
}

export function loadApiKey() {
  return safe(sessionStorage, (s) => s.getItem(SECRET) ?? "", "");
}

export function saveApiKey(key) {
  safe(sessionStorage, (s) => (key ? s.setItem(SECRET, key) : s.removeItem(SECRET)));
}
