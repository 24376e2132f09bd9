// One conversation column: its model, its history (what is sent back on the next turn) and its messages.
// Model output is only ever inserted as text nodes, never as HTML.

import { ApiError, NetworkError } from "./api.js";
import { formatMs } from "./chart.js";
import { citationPieces, citedNumbers } from "./rag.js";

function div(className, text) {
  const node = document.createElement("div");
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function describeError(err) {
  if (err instanceof ApiError) {
    const facts = [err.status ? `HTTP ${err.status}` : null, err.type, err.code, err.param ? `param: ${err.param}` : null];
    return { title: err.code || err.type || "error", facts: facts.filter(Boolean).join(" · "), message: err.message };
  }
  if (err instanceof NetworkError) return { title: "network error", facts: "", message: err.message };
  return { title: err?.name || "error", facts: "", message: err?.message || String(err) };
}

export function errorBox(err) {
  const { title, facts, message } = describeError(err);
  const box = div("error");
  box.setAttribute("role", "alert");
  if (err instanceof ApiError) {
    box.dataset.status = String(err.status);
    if (err.type) box.dataset.type = err.type;
    if (err.code) box.dataset.code = err.code;
  }
  const head = div("error-head");
  const strong = document.createElement("strong");
  strong.textContent = title;
  head.append(strong);
  if (facts) head.append(div("error-facts", facts));
  box.append(head, div("error-message", message));
  return box;
}

class AnswerView {
  constructor(container, model) {
    this.root = div("msg assistant");
    this.root.dataset.state = "streaming";
    this.root.dataset.chunks = "0";
    this.root.dataset.model = model;
    this.meta = div("msg-meta", model);
    this.body = div("msg-body");
    this.textNode = document.createTextNode("");
    this.body.append(this.textNode);
    this.root.append(this.meta, this.body);
    container.append(this.root);
    this.model = model;
    this.text = "";
    this.chunks = 0;
    this.passages = [];
  }

  append(piece) {
    this.text += piece;
    this.chunks += 1;
    this.textNode.appendData(piece);
    this.root.dataset.chunks = String(this.chunks);
  }

  setPath(path) {
    this.path = path;
    this.root.dataset.path = path;
  }

  setStats(rec, extra = "") {
    const parts = [rec.routedTo ? `${rec.model} → ${rec.routedTo}${rec.intent ? ` (${rec.intent})` : ""}` : rec.model];
    if (rec.ttft != null) parts.push(`TTFT ${formatMs(rec.ttft)}`);
    if (rec.total != null) parts.push(`total ${formatMs(rec.total)}`);
    if (rec.tokens) parts.push(`${rec.tokens} tok`);
    if (rec.tps != null) parts.push(`${rec.tps.toFixed(1)} tok/s`);
    if (extra) parts.push(extra);
    this.meta.textContent = parts.join(" · ");
    if (this.path) {
      const tag = document.createElement("span");
      tag.className = "path-tag";
      tag.dataset.path = this.path;
      tag.textContent = this.path;
      this.meta.prepend(tag);
    }
  }

  // Loading a model into the page: bytes so far (the second load reads them from the browser's cache).
  setLoading(text) {
    if (!this.loading) {
      this.loading = div("loading");
      this.root.insertBefore(this.loading, this.body);
    }
    this.loading.textContent = text;
  }

  doneLoading() {
    this.loading?.remove();
    this.loading = null;
  }

  showPassages(passages) {
    this.passages = passages;
    this.sources?.remove();
    if (!passages.length) return;
    const details = document.createElement("details");
    details.className = "sources";
    const summary = document.createElement("summary");
    details.append(summary);
    const list = document.createElement("ol");
    for (const p of passages) {
      const item = document.createElement("li");
      item.dataset.n = String(p.n);
      const label = document.createElement("span");
      label.className = "passage-label";
      label.textContent = `[${p.n}]${p.source && p.source !== "pasted text" ? ` ${p.source}` : ""}`;
      const text = document.createElement("span");
      text.className = "passage-text";
      text.textContent = p.text;
      item.append(label, text);
      list.append(item);
    }
    details.append(list);
    this.sources = details;
    this.summary = summary;
    this.markCited();
    this.root.append(details);
  }

  markCited() {
    if (!this.sources) return;
    const cited = citedNumbers(this.text, this.passages.length);
    for (const item of this.sources.querySelectorAll("li")) {
      item.classList.toggle("cited", cited.includes(Number(item.dataset.n)));
    }
    this.sources.dataset.cited = cited.join(",");
    this.sources.open = cited.length > 0;
    this.summary.textContent = cited.length
      ? `Cited: ${cited.map((n) => `[${n}]`).join(" ")} of ${this.passages.length} context passages`
      : `Context: ${this.passages.length} passage${this.passages.length === 1 ? "" : "s"} (none cited)`;
  }

  // Re-renders the finished text with [n] marks that point at the passages; plain text otherwise.
  renderCitations() {
    if (!this.passages.length) return;
    const nodes = citationPieces(this.text).map((piece) => {
      if (!piece.cites) return document.createTextNode(piece.text);
      const mark = document.createElement("mark");
      mark.className = "cite";
      mark.textContent = piece.text;
      mark.title = piece.cites.map((n) => this.passages[n - 1]?.text?.slice(0, 200) ?? "(no such passage)").join("\n—\n");
      return mark;
    });
    this.body.replaceChildren(...nodes);
  }

  finish(state) {
    this.root.dataset.state = state;
    if (state === "stopped") this.root.append(div("msg-flag", "stopped"));
    if (!this.text && state === "done") this.body.append(div("muted", "(empty answer)"));
    this.renderCitations();
    this.markCited();
  }

  fail(err) {
    this.doneLoading();
    this.root.dataset.state = "error";
    this.root.append(errorBox(err));
  }
}

export class Pane {
  constructor(root) {
    this.root = root;
    this.messages = root.querySelector(".messages");
    this.title = root.querySelector(".pane-model");
    this.syntheticBadge = root.querySelector(".badge.synthetic");
    this.routerBadge = root.querySelector(".badge.router");
    this.engineBadge = root.querySelector(".badge.engine");
    this.engine = "server";
    this.history = [];
    this.model = "";
    this.epoch = 0; // bumped by reset, so a turn that ends after a reset does not write into the new history
  }

  get visible() {
    return !this.root.hidden;
  }

  setEngine(engine) {
    this.engine = engine;
    this.root.dataset.engine = engine;
    this.engineBadge.hidden = engine !== "browser";
  }

  setModel(model, card) {
    this.model = model;
    this.root.dataset.model = model;
    this.title.textContent = model || "no model selected";
    this.syntheticBadge.hidden = !card?.lokal?.synthetic;
    this.routerBadge.hidden = !card?.lokal?.router;
  }

  reset() {
    this.epoch += 1;
    this.history = [];
    this.messages.replaceChildren();
  }

  addUser(text) {
    this.messages.append(div("msg user", text));
    this.scroll(true);
  }

  startAnswer(model) {
    const view = new AnswerView(this.messages, model);
    this.scroll(true);
    return view;
  }

  notice(err) {
    this.messages.append(errorBox(err));
    this.scroll(true);
  }

  // The question and lokal's refusal, shown as a turn; neither goes into the history sent to the model.
  refuse(prompt, text) {
    this.addUser(prompt);
    const box = div("msg assistant refusal", text);
    box.dataset.state = "refused";
    box.setAttribute("role", "status");
    this.messages.append(box);
    this.scroll(true);
  }

  // Follows the stream only while the reader is at the bottom; scrolling up to read is not fought.
  scroll(force = false) {
    const m = this.messages;
    if (force || m.scrollHeight - m.scrollTop - m.clientHeight < 80) m.scrollTop = m.scrollHeight;
  }
}
