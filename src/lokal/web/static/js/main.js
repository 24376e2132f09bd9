// Wiring: settings and pickers in the sidebar, one or two conversation panes, the latency chart.
// Each pane runs on the server (streamed over the OpenAI API) or in this browser (browser.js).

import { apiJson, isAbort, streamChat } from "./api.js";
import { BrowserError, detectBackend, generateInPage, rankPassages, webModels } from "./browser.js";
import { LatencyChart } from "./chart.js";
import { Pane, describeError } from "./conversation.js";
import { groundingMessage, listCollections, searchCollection, splitPassages } from "./rag.js";
import { loadApiKey, loadSettings, saveApiKey, saveSettings } from "./settings.js";

const CUSTOM = "__custom__";
const $ = (id) => document.getElementById(id);

const ui = {
  status: $("server-status"),
  modelA: $("model-a"), modelACustom: $("model-a-custom"),
  modelB: $("model-b"), modelBCustom: $("model-b-custom"), modelBRow: $("model-b-row"),
  compare: $("compare"), refresh: $("refresh-models"),
  temperature: $("temperature"), temperatureValue: $("temperature-value"),
  maxTokens: $("max-tokens"), system: $("system-prompt"), apiKey: $("api-key"),
  ragModes: [...document.querySelectorAll('input[name="rag-mode"]')],
  ragTextBox: $("rag-text-box"), ragText: $("rag-text"), ragTextInfo: $("rag-text-info"),
  ragCollectionBox: $("rag-collection-box"), ragCollection: $("rag-collection"),
  ragK: $("rag-k"), ragSearchMode: $("rag-search-mode"), ragNote: $("rag-collections-note"),
  ragCollectionOption: $("rag-collection-option"),
  composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"), reset: $("reset"),
  clearChart: $("clear-chart"),
  engineA: $("engine-a"), engineB: $("engine-b"), browserStatus: $("browser-status"),
  ragRank: $("rag-rank"), ragTextK: $("rag-text-k"),
};
const KEY_COOKIE = "lokal_web_key"; // web model files are fetched by transformers.js, which sends no header

const settings = loadSettings();
const panes = { a: new Pane($("pane-a")), b: new Pane($("pane-b")) };
const chart = new LatencyChart($("chart"), $("latency-summary"));
const inFlight = new Set();
let cards = new Map(); // model id -> /v1/models card
let webCards = new Map(); // model id -> card shaped like /v1/models' (from /lokal/web/models): in-page models
let answerCount = 0;

// ---- settings ------------------------------------------------------------------------------------------

function readSettings() {
  const max = ui.maxTokens.value.trim();
  Object.assign(settings, {
    temperature: Number(ui.temperature.value),
    maxTokens: max === "" ? null : Number(max),
    system: ui.system.value,
    compare: ui.compare.checked,
    ragMode: ui.ragModes.find((r) => r.checked)?.value ?? "off",
    ragText: ui.ragText.value,
    ragCollection: ui.ragCollection.value || settings.ragCollection,
    ragK: Number(ui.ragK.value) || 4,
    ragSearchMode: ui.ragSearchMode.value,
    engineA: ui.engineA.value,
    engineB: ui.engineB.value,
    ragRank: ui.ragRank.checked,
    ragTextK: Number(ui.ragTextK.value) || 3,
  });
  if (ui.modelA.options.length) settings.modelA = chosenModel("a"); // not yet listed: keep the saved choice
  if (ui.modelB.options.length) settings.modelB = chosenModel("b");
  saveSettings(settings);
}

function applySettings() {
  ui.temperature.value = String(settings.temperature);
  ui.maxTokens.value = settings.maxTokens == null ? "" : String(settings.maxTokens);
  ui.system.value = settings.system;
  ui.compare.checked = settings.compare;
  ui.ragText.value = settings.ragText;
  ui.ragK.value = String(settings.ragK);
  ui.ragSearchMode.value = settings.ragSearchMode;
  ui.engineA.value = settings.engineA === "browser" ? "browser" : "server";
  ui.engineB.value = settings.engineB === "browser" ? "browser" : "server";
  ui.ragRank.checked = Boolean(settings.ragRank);
  ui.ragTextK.value = String(settings.ragTextK);
  ui.apiKey.value = loadApiKey();
  setKeyCookie(ui.apiKey.value.trim());
  for (const r of ui.ragModes) r.checked = r.value === (settings.ragMode === "collection" ? "off" : settings.ragMode);
  showTemperature();
  showCompare();
  showRagMode();
}

const apiKey = () => ui.apiKey.value.trim();

function setKeyCookie(key) {
  const scope = "path=/static/models; SameSite=Strict";
  document.cookie = key ? `${KEY_COOKIE}=${encodeURIComponent(key)}; ${scope}` : `${KEY_COOKIE}=; Max-Age=0; ${scope}`;
}

function showTemperature() {
  ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
}

// ---- models --------------------------------------------------------------------------------------------

function label(card) {
  const tags = [];
  if (card.lokal?.router) tags.push("router");
  if (card.lokal?.synthetic) tags.push("synthetic");
  return tags.length ? `${card.id} (${tags.join(", ")})` : card.id;
}

const engineOf = (pane) => (pane === "a" ? ui.engineA : ui.engineB).value;
const cardsFor = (pane) => (engineOf(pane) === "browser" ? webCards : cards);

function fillPicker(select, custom, wanted, source = cards) {
  select.replaceChildren();
  for (const card of source.values()) select.append(new Option(label(card), card.id));
  select.append(new Option("Other model id…", CUSTOM));
  if (wanted && source.has(wanted)) {
    select.value = wanted;
  } else if (wanted) {
    select.value = CUSTOM;
    custom.value = wanted;
  }
  custom.hidden = select.value !== CUSTOM;
}

function chosenModel(pane) {
  const select = pane === "a" ? ui.modelA : ui.modelB;
  const custom = pane === "a" ? ui.modelACustom : ui.modelBCustom;
  return select.value === CUSTOM ? custom.value.trim() : select.value;
}

function syncPanes() {
  for (const key of ["a", "b"]) {
    const model = chosenModel(key);
    panes[key].setEngine(engineOf(key));
    panes[key].setModel(model, cardsFor(key).get(model));
  }
}

function fillPickers() {
  const idsA = [...cardsFor("a").keys()];
  const firstA = settings.modelA || idsA[0] || "";
  const idsB = [...cardsFor("b").keys()];
  const firstB = settings.modelB || idsB.find((id) => id !== firstA) || idsB[0] || firstA;
  fillPicker(ui.modelA, ui.modelACustom, firstA, cardsFor("a"));
  fillPicker(ui.modelB, ui.modelBCustom, firstB, cardsFor("b"));
  syncPanes();
}

// The in-page models (the catalog's webgpu variants); a server without them just offers none.
async function loadWebModels() {
  try {
    const data = await webModels(apiKey());
    webCards = new Map(data.filter((c) => c.task === "chat-completion")
      .map((c) => [c.id, { id: c.id, lokal: { synthetic: c.synthetic, task: c.task }, web: c }]));
  } catch {
    webCards = new Map();
  }
}

async function showBackend() {
  const info = await detectBackend();
  ui.browserStatus.dataset.path = info.path;
  ui.browserStatus.dataset.isolated = String(info.isolated);
  ui.browserStatus.dataset.state = info.note && !info.isolated ? "warning" : "ok";
  ui.browserStatus.textContent = info.path === "webgpu"
    ? `This browser: WebGPU (${info.adapter})`
    : `This browser: ${info.note}.`;
}

async function loadModels() {
  setStatus("connecting", "loading models…");
  let body;
  try {
    body = await apiJson("/v1/models", { apiKey: apiKey() });
  } catch (err) {
    const { title, facts, message } = describeError(err);
    const hint = err.status === 401 ? " — enter the server's API key in Settings" : "";
    setStatus("error", `${title}${facts ? ` (${facts})` : ""}: ${message}${hint}`);
    return;
  }
  const chat = (body.data ?? []).filter((card) => card.lokal?.task !== "embeddings");
  cards = new Map(chat.map((card) => [card.id, card]));
  const ids = [...cards.keys()];
  await loadWebModels();
  fillPickers();
  const synthetic = chat.filter((c) => c.lokal?.synthetic).length;
  setStatus("ok", `connected · ${ids.length} chat model${ids.length === 1 ? "" : "s"}`
    + (synthetic ? ` (${synthetic} synthetic)` : "") + (ids.length ? "" : " — pull one with `lokal model pull`"));
  await loadCollections();
}

function formatBytes(n) {
  if (!n) return "0 B";
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

// ---- RAG -----------------------------------------------------------------------------------------------

async function loadCollections() {
  let collections;
  try {
    collections = await listCollections(apiKey());
  } catch (err) {
    ui.ragNote.textContent = `Collections unavailable: ${describeError(err).message}`;
    collections = null;
  }
  const radio = ui.ragModes.find((r) => r.value === "collection");
  ui.ragCollection.replaceChildren();
  if (collections === null) {
    radio.disabled = true;
    if (!ui.ragNote.textContent) ui.ragNote.textContent = "This server has no RAG collections endpoint; paste text instead.";
  } else if (!collections.length) {
    radio.disabled = true;
    ui.ragNote.textContent = "No collections yet: create one with `lokal rag ingest PATH`.";
  } else {
    radio.disabled = false;
    ui.ragNote.textContent = "";
    for (const c of collections) {
      const counts = [c.documents != null ? `${c.documents} docs` : null, c.chunks != null ? `${c.chunks} chunks` : null];
      const extra = counts.filter(Boolean).join(", ");
      ui.ragCollection.append(new Option(extra ? `${c.name} (${extra})` : c.name, c.name));
    }
    if (collections.some((c) => c.name === settings.ragCollection)) ui.ragCollection.value = settings.ragCollection;
    if (settings.ragMode === "collection") radio.checked = true;
  }
  ui.ragCollectionOption.classList.toggle("disabled", radio.disabled);
  if (radio.disabled && radio.checked) ui.ragModes[0].checked = true;
  showRagMode();
}

function showRagMode() {
  const mode = ui.ragModes.find((r) => r.checked)?.value ?? "off";
  ui.ragTextBox.hidden = mode !== "text";
  ui.ragCollectionBox.hidden = mode !== "collection";
  const passages = splitPassages(ui.ragText.value);
  const chars = passages.reduce((n, p) => n + p.text.length, 0);
  ui.ragTextInfo.textContent = passages.length
    ? `${passages.length} passage${passages.length === 1 ? "" : "s"}, about ${Math.ceil(chars / 4)} tokens`
    : "";
}

// { passages, refusal }: a refusal (Collection mode, nothing passed the server's relevance gate) means no answer.
async function gatherPassages(prompt, signal, onProgress) {
  if (settings.ragMode === "text" && settings.ragRank) {
    // Embedded and ranked in this page with MiniLM: the text never leaves the browser.
    const passages = await rankPassages(prompt, splitPassages(settings.ragText), settings.ragTextK,
      { apiKey: apiKey(), onProgress });
    if (signal.aborted) throw new DOMException("stopped", "AbortError");
    return { passages, refusal: null };
  }
  if (settings.ragMode === "text") return { passages: splitPassages(settings.ragText), refusal: null };
  if (settings.ragMode === "collection" && ui.ragCollection.value) {
    return searchCollection({ collection: ui.ragCollection.value, query: prompt, k: settings.ragK,
      mode: settings.ragSearchMode, apiKey: apiKey(), signal });
  }
  return { passages: [], refusal: null };
}

// ---- chat ----------------------------------------------------------------------------------------------

function activePanes() {
  return settings.compare ? [panes.a, panes.b] : [panes.a];
}

function buildMessages(pane, prompt, passages) {
  const system = [settings.system.trim(), passages.length ? groundingMessage(passages) : ""].filter(Boolean);
  // Some chat templates accept only one system message, so the prompt and the grounding share it.
  const head = system.length ? [{ role: "system", content: system.join("\n\n") }] : [];
  return [...head, ...pane.history, { role: "user", content: prompt }];
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  document.body.dataset.busy = busy ? "true" : "false";
}

async function runTurn(pane, prompt, passages) {
  const model = pane.model;
  const epoch = pane.epoch;
  const remember = (answer) => {
    if (pane.epoch === epoch) pane.history.push({ role: "user", content: prompt }, { role: "assistant", content: answer });
  };
  pane.addUser(prompt);
  const view = pane.startAnswer(model);
  view.showPassages(passages);
  const body = { model, messages: buildMessages(pane, prompt, passages), temperature: settings.temperature };
  if (settings.maxTokens != null) body.max_tokens = settings.maxTokens;

  const controller = new AbortController();
  inFlight.add(controller);
  const inPage = pane.engine === "browser";
  const rec = { id: ++answerCount, model, ttft: null, total: null, tokens: 0, tps: null, state: "streaming",
    routedTo: null, intent: null, path: inPage ? null : "server" };
  if (!inPage) {
    view.setPath("server");
    chart.upsert(rec);
  }
  let t0 = performance.now();
  let tFirst = null;
  let frame = 0;
  const measure = (now, tokens) => {
    rec.total = now - t0;
    rec.tokens = tokens;
    rec.tps = tFirst != null && tokens > 1 && now > tFirst ? ((tokens - 1) * 1000) / (now - tFirst) : null;
  };
  const repaint = () => {
    frame = 0;
    view.setStats(rec);
    chart.upsert(rec);
    pane.scroll();
  };

  const onDelta = (text) => {
    const now = performance.now();
    if (tFirst == null) {
      tFirst = now;
      rec.ttft = now - t0;
    }
    view.append(text);
    measure(now, view.chunks);
    frame ||= requestAnimationFrame(repaint);
  };
  // In the page, the clock starts when the model is in memory: loading it (once) is not latency.
  const startInPage = async () => {
    const info = await detectBackend();
    view.setPath(info.path);
    rec.path = info.path;
    rec.model = `${model} · ${info.path}`; // the chart compares paths: "tiny-web · wasm" beside "tiny"
    const result = await generateInPage({
      id: model, messages: body.messages, maxTokens: settings.maxTokens ?? 256, temperature: settings.temperature,
      signal: controller.signal, apiKey: apiKey(),
      onProgress: ({ text, loaded, total }) => view.setLoading(text
        ?? `loading ${model} into this page: ${formatBytes(loaded)}` + (total ? ` / ${formatBytes(total)}` : "")),
      onDelta: (text) => {
        if (tFirst == null) {
          view.doneLoading();
          chart.upsert(rec);
        }
        onDelta(text);
      },
      onReady: () => {
        view.doneLoading();
        t0 = performance.now();
      },
    });
    view.doneLoading();
    if (!chart.records.includes(rec)) chart.upsert(rec);
    return result;
  };

  try {
    const result = inPage ? await startInPage() : await streamChat({
      body, apiKey: apiKey(), signal: controller.signal, onDelta,
    });
    measure(performance.now(), result.usage?.completion_tokens ?? view.chunks);
    rec.state = "done";
    view.root.dataset.tokens = String(rec.tokens);
    rec.routedTo = result.routedTo;
    rec.intent = result.intent;
    remember(view.text);
    view.finish("done");
    view.setStats(rec, result.finishReason === "length" ? "hit max tokens" : result.finishReason ?? "");
  } catch (err) {
    if (isAbort(err)) {
      measure(performance.now(), view.chunks);
      rec.state = "stopped";
      // Keep the partial answer in the history: it is what the user saw.
      remember(view.text);
      view.finish("stopped");
      view.setStats(rec, "stopped");
    } else {
      chart.remove(rec); // a failed request has no latency worth plotting
      view.fail(err);
      view.setStats({ ...rec, ttft: null, tps: null, tokens: 0 }, "failed");
    }
  } finally {
    if (frame) cancelAnimationFrame(frame);
    inFlight.delete(controller);
    if (chart.records.includes(rec)) chart.upsert(rec);
    pane.scroll();
  }
}

async function send() {
  readSettings();
  const prompt = ui.prompt.value.trim();
  if (!prompt || inFlight.size) return;
  const targets = activePanes();
  const missing = targets.find((p) => !p.model);
  if (missing) {
    missing.notice(missing.engine === "browser"
      ? new BrowserError(`Choose a web model first${webCards.size ? "" : ": the catalog has none with a browser "
        + "(webgpu) variant yet; `lokal model synth --like tiny --format web` writes one"}.`, "no web model")
      : new Error("Choose a model first (the list comes from /v1/models)."));
    return;
  }
  ui.prompt.value = "";
  setBusy(true);
  const search = new AbortController();
  inFlight.add(search);
  try {
    let grounding;
    try {
      grounding = await gatherPassages(prompt, search.signal, ({ loaded, total }) => {
        ui.browserStatus.textContent = `loading MiniLM into this page: ${formatBytes(loaded)}`
          + (total ? ` / ${formatBytes(total)}` : "");
      });
      if (settings.ragMode === "text" && settings.ragRank) showBackend();
    } catch (err) {
      if (!isAbort(err)) for (const pane of targets) pane.notice(err);
      return;
    } finally {
      inFlight.delete(search);
    }
    if (grounding.refusal) {
      // Refused like `lokal rag ask` and the Chainlit chat: the model is not asked to answer from noise.
      for (const pane of targets) pane.refuse(prompt, grounding.refusal);
      return;
    }
    await Promise.all(targets.map((pane) => runTurn(pane, prompt, grounding.passages)));
  } finally {
    setBusy(false);
    ui.prompt.focus();
  }
}

function stopAll() {
  for (const controller of inFlight) controller.abort();
}

function resetConversation() {
  stopAll();
  for (const pane of Object.values(panes)) pane.reset();
  ui.prompt.focus();
}

function showCompare() {
  ui.modelBRow.hidden = !ui.compare.checked;
  panes.b.root.hidden = !ui.compare.checked;
  $("panes").classList.toggle("split", ui.compare.checked);
}

// ---- events --------------------------------------------------------------------------------------------

for (const [select, custom] of [[ui.modelA, ui.modelACustom], [ui.modelB, ui.modelBCustom]]) {
  select.addEventListener("change", () => {
    custom.hidden = select.value !== CUSTOM;
    if (!custom.hidden) custom.focus();
    syncPanes();
    readSettings();
  });
  custom.addEventListener("input", () => {
    syncPanes();
    readSettings();
  });
}
for (const [select, key] of [[ui.engineA, "modelA"], [ui.engineB, "modelB"]]) {
  select.addEventListener("change", () => {
    readSettings();
    settings[key] = ""; // the other engine's list has other models
    fillPickers();
    readSettings();
  });
}
ui.ragRank.addEventListener("change", readSettings);
ui.ragTextK.addEventListener("change", readSettings);
ui.compare.addEventListener("change", () => {
  showCompare();
  readSettings();
});
ui.temperature.addEventListener("input", showTemperature);
for (const input of [ui.temperature, ui.maxTokens, ui.system, ui.ragText, ui.ragK, ui.ragSearchMode, ui.ragCollection]) {
  input.addEventListener("change", readSettings);
}
ui.ragText.addEventListener("input", showRagMode);
for (const radio of ui.ragModes) {
  radio.addEventListener("change", () => {
    showRagMode();
    readSettings();
  });
}
ui.apiKey.addEventListener("change", () => {
  saveApiKey(apiKey());
  setKeyCookie(apiKey());
  loadModels();
});
ui.refresh.addEventListener("click", loadModels);
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && inFlight.size) stopAll();
});
ui.stop.addEventListener("click", stopAll);
ui.reset.addEventListener("click", resetConversation);
ui.clearChart.addEventListener("click", () => chart.clear());

// Links for automation and sharing: ?engine=browser|server&model=ID&prompt=TEXT&autorun=1 (first pane).
const params = new URLSearchParams(location.search);
applySettings();
if (["browser", "server"].includes(params.get("engine"))) {
  if (params.get("engine") !== ui.engineA.value) settings.modelA = "";
  ui.engineA.value = params.get("engine");
}
if (params.get("model")) settings.modelA = params.get("model");
if (params.get("prompt")) ui.prompt.value = params.get("prompt");
setBusy(false);
showBackend();
loadModels().then(() => {
  if (params.get("autorun") === "1" && ui.prompt.value.trim()) send();
});
