// Grounding: turn pasted text or a collection search into numbered passages, and read citations back.

import { apiJson } from "./api.js";

const MAX_PASSAGE_CHARS = 1200; // a long paragraph is cut so one citation points at something readable
const CITATION = /\[(\d+(?:\s*[,;]\s*\d+)*)\]/g;

export const GROUNDING_INSTRUCTION =
  "Answer only from the context below. If the context does not contain the answer, say so; do not use "
  + "outside knowledge. Cite the passages you use with their numbers in square brackets, like [1] or [2][3].";

function cutLong(paragraph) {
  if (paragraph.length <= MAX_PASSAGE_CHARS) return [paragraph];
  const sentences = paragraph.match(/[^.!?]+(?:[.!?]+|$)\s*/g) ?? [paragraph];
  const pieces = [];
  let current = "";
  for (const sentence of sentences) {
    if (current && current.length + sentence.length > MAX_PASSAGE_CHARS) {
      pieces.push(current.trim());
      current = "";
    }
    current += sentence;
  }
  if (current.trim()) pieces.push(current.trim());
  return pieces;
}

export function splitPassages(text) {
  return text
    .split(/\n\s*\n/)
    .map((p) => p.trim())
    .filter(Boolean)
    .flatMap(cutLong)
    .map((body, i) => ({ n: i + 1, source: "pasted text", text: body }));
}

export function groundingMessage(passages) {
  const blocks = passages.map((p) => `[${p.n}] ${p.source && p.source !== "pasted text" ? `(${p.source}) ` : ""}${p.text}`);
  return `${GROUNDING_INSTRUCTION}\n\nContext:\n${blocks.join("\n\n")}`;
}

// The passage numbers an answer cites, in order of first mention, limited to passages that exist.
export function citedNumbers(answer, count) {
  const seen = [];
  for (const match of answer.matchAll(CITATION)) {
    for (const part of match[1].split(/[,;]/)) {
      const n = Number(part.trim());
      if (n >= 1 && n <= count && !seen.includes(n)) seen.push(n);
    }
  }
  return seen;
}

// Splits an answer into text and citation pieces so the view can mark [n] without parsing HTML.
export function citationPieces(answer) {
  const pieces = [];
  let last = 0;
  for (const match of answer.matchAll(CITATION)) {
    if (match.index > last) pieces.push({ text: answer.slice(last, match.index) });
    pieces.push({ text: match[0], cites: match[1].split(/[,;]/).map((s) => Number(s.trim())) });
    last = match.index + match[0].length;
  }
  if (last < answer.length) pieces.push({ text: answer.slice(last) });
  return pieces;
}

// null when the server has no RAG endpoints (404) — the page then offers pasted text only.
export async function listCollections(apiKey) {
  try {
    const body = await apiJson("/v1/rag/collections", { apiKey });
    return Array.isArray(body.data) ? body.data : [];
  } catch (err) {
    if (err.status === 404 || err.status === 405) return null;
    throw err;
  }
}

// The server applies lokal's one relevance gate (the CLI and the Chainlit chat use the same): only the hits
// it lists in `context` may ground an answer, and with none it sends the refusal the CLI prints.
export async function searchCollection({ collection, query, k, mode, apiKey, signal }) {
  const body = await apiJson("/v1/rag/search", { method: "POST", apiKey, signal, body: { collection, query, k, mode } });
  const hits = body.data ?? [];
  const used = Array.isArray(body.context) ? new Set(body.context) : null;
  const passages = hits
    .filter((hit) => used === null || used.has(hit.rank))
    .map((hit, i) => {
      const name = String(hit.source ?? "").split(/[\\/]/).pop();
      const where = hit.location ? ` ${hit.location}` : "";
      return { n: i + 1, source: `${name}${where}`.trim() || collection, text: String(hit.text ?? ""),
        score: hit.score, similarity: hit.dense };
    });
  const refusal = body.refusal ?? (passages.length ? null : `Nothing relevant was found in the collection '${collection}'.`);
  return { passages, refusal };
}
