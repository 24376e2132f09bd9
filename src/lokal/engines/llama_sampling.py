"""How lokal samples on llama.cpp: the sampler chain for a GenerationRequest, compiled grammars, and lazy ones.

The single-stream and the batched engine both sample through RequestSampler, so a seed means the same thing in
both. Every field of the request goes to one of llama.cpp's own samplers, in llama-server's order: logit bias,
penalties, then the truncations (top-k, top-p, min-p), temperature and the seeded draw.

A grammar is checked after the draw, as llama-server does: applying it to the whole vocabulary (152k pieces
matched against the grammar's stacks) cost two thirds of the decode speed, while the token the free chain
draws is almost always one the grammar allows. Only a token it rejects sends the step back to the full
vocabulary with the grammar applied first.

A lazy grammar (free text until a trigger word, then the grammar from that word on) is started here rather
than by llama.cpp's lazy grammar sampler: when the token that completes a trigger also carries text the grammar
rejects ('{"names"' for a trigger '{"name"'), that sampler throws a C++ exception through the C API, which
aborts the whole server. Here the text from the trigger on is checked token by token with the grammar's own
apply before it is accepted; text that does not fit leaves the answer free, and a later trigger may start it.
"""

from __future__ import annotations

import ctypes
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lokal.engines.base import GenerationRequest
from lokal.errors import InvalidRequest

TOP_K = 40  # the defaults of llama-server and llama-cpp-python; a request may set its own
MIN_P = 0.05
PENALTY_LAST_N = 64  # how many recent tokens repeat/presence/frequency penalties look at (llama.cpp's default)
GRAMMAR_CACHE_SIZE = 16
# llama_token_data as numpy lays it out: the candidates of a constrained step are built from the logits in one
# copy instead of a Python loop over the vocabulary.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def llama() -> Any:
    from lokal.engines.llamacpp import import_llama_cpp

    return import_llama_cpp()


class Vocabulary:
    """A loaded model's token pieces as the grammar sees them (special tokens written out)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vocab = model.vocab
        self.n_vocab = int(model.n_vocab())
        self._by_piece: dict[bytes, int] | None = None
        self._longest = 0

    def piece(self, token: int) -> bytes:
        return bytes(self.model.detokenize([token], special=True))

    def spellings(self, data: bytes) -> list[list[int]]:
        """At each offset of `data`, the tokens whose piece starts there, longest first."""
        if self._by_piece is None:  # once per model, on the first trigger: about 0.3 s for 152k tokens
            self._by_piece = {}
            for t in range(self.n_vocab):
                p = self.piece(t)
                if p and p[:1] != b"\0":
                    self._by_piece.setdefault(p, t)
            self._longest = max(map(len, self._by_piece), default=0)
        out: list[list[int]] = []
        for i in range(len(data)):
            found = (self._by_piece.get(data[i : i + n]) for n in range(min(self._longest, len(data) - i), 0, -1))
            out.append([t for t in found if t is not None])
        return out


class GrammarCache:
    """Parsed grammars, one per distinct GBNF text, in a small LRU.

    llama.cpp parses a grammar when its sampler is made; a JSON-schema or tool grammar can be large, and the
    same one comes with every request of an app. Each request gets a clone of the parsed prototype (its own
    parse state), which costs a copy of the rules rather than a parse."""

    def __init__(self, vocab: Any, size: int = GRAMMAR_CACHE_SIZE) -> None:
        self._vocab = vocab
        self._size = size
        self._protos: OrderedDict[str, Any] = OrderedDict()
        self.compiled = 0  # grammars parsed so far (the cache's misses)

    def sampler(self, text: str) -> Any:
        """A fresh grammar sampler (llama_sampler*, owned by the caller); InvalidRequest if `text` is not GBNF."""
        return llama().llama_sampler_clone(self._proto(text))

    def check(self, text: str) -> None:
        self._proto(text)

    def _proto(self, text: str) -> Any:
        proto = self._protos.get(text)
        if proto is not None:
            self._protos.move_to_end(text)
            return proto
        lc = llama()
        proto = lc.llama_sampler_init_grammar(self._vocab, text.encode("utf-8"), b"root")
        if not proto:  # llama.cpp returns NULL for a grammar it cannot parse (and logs why)
            raise InvalidRequest(
                "the grammar is not valid GBNF (a `root` rule, every rule defined, no left recursion): "
                + _excerpt(text),
                param="grammar",
            )
        self.compiled += 1
        self._protos[text] = proto
        if len(self._protos) > self._size:
            _, old = self._protos.popitem(last=False)
            lc.llama_sampler_free(old)
        return proto

    def close(self) -> None:
        lc = llama()
        while self._protos:
            _, proto = self._protos.popitem()
            lc.llama_sampler_free(proto)


def _excerpt(text: str, limit: int = 120) -> str:
    one = " ".join(text.split())
    return repr(one if len(one) <= limit else one[:limit] + "...")


def check_logit_bias(bias: Mapping[int, float], n_vocab: int) -> dict[int, float]:
    """The request's biases for llama.cpp, whose sampler indexes the vocabulary by them unchecked.

    A bias of -100 stays an addition, as in llama.cpp (a ban in practice): an infinite one could leave a
    grammar no token to allow, and llama.cpp aborts on a token its grammar rejects."""
    out: dict[int, float] = {}
    for token, value in bias.items():
        if not 0 <= token < n_vocab:
            raise InvalidRequest(
                f"logit_bias names token {token}, but this model's vocabulary has ids 0-{n_vocab - 1}",
                param="logit_bias",
            )
        out[int(token)] = float(value)
    return out


def grammar_allows(grammar: Any, token: int) -> bool:
    """Whether a grammar sampler in its current state accepts `token` next (its apply on that one token)."""
    lc = llama()
    data = (lc.llama_token_data * 1)(lc.llama_token_data(token, 0.0, 0.0))
    candidates = lc.llama_token_data_array(data, 1, -1, False)
    lc.llama_sampler_apply(grammar, ctypes.byref(candidates))
    return not math.isinf(data[0].logit)


def feed_grammar(grammar: Any, data: bytes, vocab: Vocabulary) -> bool:
    """Accept `data` into a grammar sampler, spelled in tokens it allows; False (the grammar untouched only up to
    the failing point, so the caller drops it) when the grammar rejects the text."""
    lc = llama()
    spellings = vocab.spellings(data)
    i = 0
    while i < len(data):
        token = next((t for t in spellings[i] if grammar_allows(grammar, t)), None)
        if token is None:
            return False
        lc.llama_sampler_accept(grammar, token)
        i += len(vocab.piece(token))
    return True


class LazyGrammar:
    """Watches the generated text for the first trigger word of a lazy grammar."""

    def __init__(self, text: str, triggers: Sequence[str]) -> None:
        self.text = text
        self.triggers = [w.encode("utf-8") for w in triggers if w]
        self._keep = max((len(w) for w in self.triggers), default=1) - 1
        self._tail = b""

    def feed(self, piece: bytes) -> bytes | None:
        """The text from the trigger on, when this token's piece completes one; else None."""
        seen = self._tail + piece
        hits = [i for w in self.triggers if (i := seen.find(w)) != -1]
        if hits:
            self._tail = b""
            return seen[min(hits) :]
        self._tail = seen[-self._keep :] if self._keep else b""
        return None


class RequestSampler:
    """One request's sampler chain (a llama_cpp._internals.LlamaSampler) and, for a lazy grammar, the watch
    for its trigger. Not thread-safe: each request samples on its engine's thread."""

    def __init__(self, req: GenerationRequest, *, vocab: Vocabulary, grammars: GrammarCache, json_gbnf: str) -> None:
        from llama_cpp._internals import LlamaSampler

        lc = llama()
        self._vocab = vocab
        self._grammars = grammars
        bias = check_logit_bias(req.logit_bias, vocab.n_vocab) if req.logit_bias else {}
        grammar = req.grammar or (json_gbnf if req.json_mode else None)  # an explicit grammar beats JSON mode
        self.lazy: LazyGrammar | None = None
        self.grammar: Any = None  # llama_sampler* checked after the chain's draw; owned here
        if grammar and req.grammar and req.grammar_triggers:
            grammars.check(grammar)  # an invalid grammar is the client's error, raised before anything runs
            self.lazy = LazyGrammar(grammar, req.grammar_triggers)
        elif grammar:
            self.grammar = grammars.sampler(grammar)
        self._candidates: np.ndarray[Any, Any] | None = None  # built on the first constrained step
        self._ids: np.ndarray[Any, Any] | None = None
        self.resampled = 0  # constrained steps whose first draw the grammar rejected
        chain = self.chain = LlamaSampler()
        if bias:
            chain.add_logit_bias(vocab.n_vocab, bias)
        if req.repeat_penalty != 1.0 or req.presence_penalty or req.frequency_penalty:
            chain.add_penalties(
                vocab.n_vocab, PENALTY_LAST_N, req.repeat_penalty, req.frequency_penalty, req.presence_penalty
            )
        if req.temperature == 0:
            chain.add_greedy()
        else:
            chain.add_top_k(TOP_K if req.top_k is None else req.top_k)
            chain.add_top_p(req.top_p, 1)
            chain.add_min_p(MIN_P if req.min_p is None else req.min_p, 1)
            chain.add_temp(req.temperature)
            chain.add_dist((req.seed & 0xFFFFFFFF) if req.seed is not None else lc.LLAMA_DEFAULT_SEED)

    def sample(self, ctx: Any, row: int) -> int:
        """Sample from logits row `row` of a llama.cpp context, and accept the token into the chain."""
        lc = llama()
        if self.grammar is None:
            token = int(lc.llama_sampler_sample(self.chain.sampler, ctx, row))  # builds, draws and accepts in C
            if self.lazy is not None:
                constrained = self.lazy.feed(self._vocab.piece(token))
                if constrained is not None:
                    self._start_grammar(constrained)
            return token
        token = self._draw(ctx, row, with_grammar=False)
        if not grammar_allows(self.grammar, token):
            self.resampled += 1
            token = self._draw(ctx, row, with_grammar=True)
        lc.llama_sampler_accept(self.grammar, token)
        lc.llama_sampler_accept(self.chain.sampler, token)
        return token

    def _draw(self, ctx: Any, row: int, *, with_grammar: bool) -> int:
        """The chain's pick from the whole vocabulary of logits row `row`, the grammar applied first if asked;
        nothing is accepted (the caller accepts the token it keeps)."""
        lc = llama()
        n = self._vocab.n_vocab
        if self._candidates is None:
            self._candidates = np.zeros(n, dtype=TOKEN_DATA)
            self._ids = np.arange(n, dtype=np.int32)
        cand = self._candidates
        cand["id"] = self._ids  # samplers sort the array in place: reset it each draw
        cand["logit"] = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, row), shape=(n,))
        cand["p"] = 0.0
        data = cand.ctypes.data_as(ctypes.POINTER(lc.llama_token_data))
        array = lc.llama_token_data_array(data, n, -1, False)
        if with_grammar:
            lc.llama_sampler_apply(self.grammar, ctypes.byref(array))
        lc.llama_sampler_apply(self.chain.sampler, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            raise RuntimeError("the sampler chain selected no token")  # llama.cpp aborts here; we fail the request
        return int(array.data[array.selected].id)

    def _start_grammar(self, constrained: bytes) -> None:
        """Constrain from here on with the lazy grammar (the chain's state carries on), having read the text from
        the trigger on."""
        assert self.lazy is not None
        grammar = self._grammars.sampler(self.lazy.text)
        if not feed_grammar(grammar, constrained, self._vocab):
            llama().llama_sampler_free(grammar)  # the text does not fit: it stays free, a later trigger may start it
            return
        self.lazy = None
        self.grammar = grammar

    def close(self) -> None:
        if self.grammar is not None:
            llama().llama_sampler_free(self.grammar)
            self.grammar = None
        self.chain.close()
