"""`lokal rag ...`: ingest documents into a collection, search it, ask it, evaluate it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lokal.cli import _common
from lokal.errors import InvalidRequest, LokalError
from lokal.rag.answer import DEFAULT_MAX_CONTEXT_CHARS, DEFAULT_MIN_SCORE, citation_label, make_client
from lokal.rag.chunk import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS
from lokal.rag.gate import Gate, apply_gate
from lokal.rag.index import DEFAULT_COLLECTION, Index, delete_collection, list_collections
from lokal.rag.retrieve import MODES, Hit, Mode, Retriever

app = typer.Typer(no_args_is_help=True, help="Retrieval-augmented answers over your documents.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

CollectionOpt = Annotated[
    str, typer.Option("--collection", "-c", help="Collection name (one SQLite file in LOKAL_HOME/rag).")
]
KOpt = Annotated[int, typer.Option("-k", "--top-k", min=1, max=100, help="How many chunks to retrieve.")]
# -m is --model everywhere in lokal's CLI, so --mode has no short flag.
ModeOpt = Annotated[str, typer.Option("--mode", help="bm25 | dense | hybrid (reciprocal rank fusion).")]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option("--filter", "-f", help="KEY=PATTERN on chunk metadata (source, name, kind, heading, tags)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", envvar="LOKAL_RAG_BASE_URL", help="OpenAI-compatible endpoint [lokal's /v1]."),
]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="LOKAL_RAG_API_KEY", help="Endpoint API key.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Chat model [the endpoint's first chat model].")]


def _run(fn: Callable[[], T]) -> T:
    """Lokal errors become one red line and exit code 1, not a traceback."""
    try:
        return fn()
    except LokalError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            err.print(f"[red]error:[/red] {what} must look like KEY=VALUE, got {item!r}")
            raise typer.Exit(2)
        pairs[key.strip()] = value.strip()
    return pairs


def _mode(value: str) -> Mode:
    if value not in MODES:
        err.print(f"[red]error:[/red] --mode must be one of {', '.join(MODES)}")
        raise typer.Exit(2)
    return value


def _shown(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _open_retriever(collection: str) -> Retriever:
    return Retriever(Index.open(collection))


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (md, txt, html, pdf, csv).")],
    collection: CollectionOpt = DEFAULT_COLLECTION,
    max_chars: Annotated[int, typer.Option(min=50, help="Largest chunk, in characters.")] = DEFAULT_MAX_CHARS,
    overlap: Annotated[int, typer.Option(min=0, help="Characters repeated between chunks.")] = DEFAULT_OVERLAP_CHARS,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE stored on every chunk.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Index documents; re-running updates only changed files and drops deleted ones."""
    from lokal.rag.ingest import FileResult
    from lokal.rag.ingest import ingest as run_ingest

    tags = _pairs(tag, "--tag")
    # Checked before the collection is opened: a typo must not leave an empty collection behind.
    missing = [p for p in paths if not p.exists()]
    if missing:
        err.print(f"[red]error:[/red] no such file or folder: {', '.join(escape(str(p)) for p in missing)}")
        raise typer.Exit(1)
    from lokal.rag.index import collection_path

    is_new = _run(lambda: not collection_path(collection).exists())  # also checks the name

    def go() -> None:
        with Index.open(collection, create=True) as index:
            progress = Progress(
                TextColumn("[bold]ingest[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=err,
                transient=True,
                disable=as_json,
            )
            with progress:
                task = progress.add_task("", total=None)

                def on_file(r: FileResult) -> None:
                    progress.update(task, advance=1, description=escape(Path(r.path).name))
                    if r.status == "skipped" and r.reason != "unsupported file type" and not as_json:
                        progress.console.print(f"[yellow]skipped[/yellow] {escape(_shown(r.path))}: {escape(r.reason)}")

                report = run_ingest(
                    index,
                    paths,
                    max_chars=max_chars,
                    overlap_chars=overlap,
                    tags=tags,
                    on_total=lambda n: progress.update(task, total=n),
                    on_file=on_file,
                )
            docs, chunks = index.counts()
        if is_new and docs == 0:
            delete_collection(collection)  # nothing it could index: leave no empty collection behind
            err.print(
                f"[red]error:[/red] nothing to index in {', '.join(escape(str(p)) for p in paths)} "
                "(md, txt, html, pdf, csv); no collection created"
            )
            raise typer.Exit(1)
        if as_json:
            out.print_json(json.dumps(report.to_dict() | {"documents": docs, "chunks": chunks}))
            return
        unsupported = [r for r in report.results if r.reason == "unsupported file type"]
        if unsupported:
            kinds = sorted({Path(r.path).suffix or "(none)" for r in unsupported})
            out.print(f"ignored {len(unsupported)} file(s) of unsupported types ({', '.join(kinds)})")
        rate = report.chunks_written / report.seconds if report.seconds > 0 else 0.0
        out.print(
            f"[bold]{collection}[/bold]: {report.count('added')} added, {report.count('updated')} updated, "
            f"{report.count('unchanged')} unchanged, {report.count('deleted')} deleted, "
            f"{report.count('skipped') - len(unsupported)} skipped; "
            f"{report.chunks_written} chunks written in {report.seconds:.1f}s ({rate:.0f} chunks/s); "
            f"collection now {docs} documents, {chunks} chunks"
        )

    _run(go)


def _print_hits(hits: list[Hit], min_score: float) -> None:
    if not hits:
        out.print("no matching chunks")
        return
    for h in hits:
        # Two decimals: 0.62 reads; 0.6213487 only looks precise. Similarity is what the gate compares.
        parts = [] if h.dense is None else [f"similarity {h.dense:.2f}"]
        if h.bm25 is not None:
            parts.append(f"bm25 {h.bm25:.1f}")
        below = h.dense is not None and h.dense < min_score
        gate = f"  [yellow](below --min-score {min_score:.2f}: not used to answer)[/yellow]" if below else ""
        out.print(
            f"[bold]{h.rank}.[/bold] [cyan]{escape(_shown(h.source))}[/cyan] {escape(h.location)}  "
            f"{', '.join(parts)}{gate}"
        )
        snippet = " ".join(h.text.split())
        out.print(f"   {escape(snippet[:300])}{'…' if len(snippet) > 300 else ''}")


MinScoreOpt = Annotated[
    float,
    typer.Option(
        "--min-score", help="Similarity (cosine, -1 to 1) a passage needs to be used; below it for all: refuse."
    ),
]
InProcessOpt = Annotated[
    bool,
    typer.Option("--in-process", help="Search in this process even when a lokal server is up (slower start)."),
]


def _gated_search(
    collection: str,
    query: str,
    *,
    k: int,
    mode: Mode,
    filters: dict[str, str],
    min_score: float,
    max_context_chars: int,
    in_process: bool,
) -> tuple[Gate, str]:
    """The gated search and where it ran: the running server's warm one when it can, else here."""
    from lokal.cli.rag_remote import warm_search

    if not in_process:
        warm = warm_search(
            collection, query, k=k, mode=mode, filters=filters, min_score=min_score,
            max_context_chars=max_context_chars,
        )  # fmt: skip
        if warm is not None:
            return warm.gate, warm.server
    retriever = _open_retriever(collection)
    hits = retriever.with_similarity(query, retriever.search(query, k=k, mode=mode, filters=filters))
    return apply_gate(hits, min_score, max_context_chars), "in-process"


@app.command()
def search(
    question: Annotated[str, typer.Argument(help="What to look for.")],
    collection: CollectionOpt = DEFAULT_COLLECTION,
    k: KOpt = 3,
    mode: ModeOpt = "hybrid",
    filters: FilterOpt = None,
    min_score: MinScoreOpt = DEFAULT_MIN_SCORE,
    in_process: InProcessOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the best chunks with their source file, location and similarity (marked when below the gate)."""
    m, flt = _mode(mode), _pairs(filters, "--filter")

    def go() -> None:
        gate, where = _gated_search(
            collection, question, k=k, mode=m, filters=flt, min_score=min_score,
            max_context_chars=DEFAULT_MAX_CONTEXT_CHARS, in_process=in_process,
        )  # fmt: skip
        if as_json:
            body = {
                "collection": collection,
                "mode": m,
                "searched_on": where,
                "gate": gate.to_dict(),
                "refusal": gate.refusal(collection),
                "hits": [h.to_dict() for h in gate.hits],
            }
            out.print_json(json.dumps(body))
            return
        _print_hits(gate.hits, min_score)
        err.print(f"[dim]searched {'in this process' if where == 'in-process' else 'on ' + where}[/dim]")

    _run(go)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: CollectionOpt = DEFAULT_COLLECTION,
    k: KOpt = 4,
    mode: ModeOpt = "hybrid",
    filters: FilterOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    min_score: MinScoreOpt = DEFAULT_MIN_SCORE,
    max_context_chars: Annotated[int, typer.Option(min=100)] = DEFAULT_MAX_CONTEXT_CHARS,
    max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.1,
    in_process: InProcessOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Answer from the collection only, streaming, with numbered citations; refuse if nothing is relevant."""
    from lokal.rag.answer import answer_from

    m, flt = _mode(mode), _pairs(filters, "--filter")

    def on_token(token: str) -> None:
        sys.stdout.write(token)
        sys.stdout.flush()

    async def main() -> tuple[Any, bool, str]:
        if not question.strip():
            raise InvalidRequest("the question is empty", param="question")
        gate, where = await asyncio.to_thread(
            lambda: _gated_search(
                collection, question, k=k, mode=m, filters=flt, min_score=min_score,
                max_context_chars=max_context_chars, in_process=in_process,
            )
        )  # fmt: skip
        client = make_client(base_url, api_key)
        try:
            found = await answer_from(
                gate,
                question,
                collection,
                client=client,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                on_token=None if as_json else on_token,
            )
            synthetic = found.model is not None and await asyncio.to_thread(
                _common.card_says_synthetic, str(client.base_url), found.model, client.api_key
            )
            return found, synthetic, where
        finally:
            await client.close()

    answer, synthetic, where = _run(lambda: asyncio.run(main()))
    if as_json:
        out.print_json(json.dumps(answer.to_dict() | {"synthetic": synthetic, "searched_on": where}))
        return
    if answer.refused:
        out.print(f"[yellow]{escape(answer.text)}[/yellow]")
        return
    sys.stdout.write("\n\n")
    if synthetic:
        out.print(f"[bold yellow]{escape(answer.model)} is SYNTHETIC: random weights, the answer above is noise[/]")
    if answer.cited:
        out.print("[bold]Sources[/bold]")
        listed = [(n, answer.sources[n - 1]) for n in answer.cited]
    else:
        out.print("[bold]Context given to the model[/bold] (the answer cites none of it)")
        listed = list(enumerate(answer.sources, start=1))
    for n, h in listed:
        out.print(f"  {escape(citation_label(n, h))}  ({escape(_shown(h.source))})")


@app.command("eval")
def evaluate(
    qa_file: Annotated[Path, typer.Argument(help="JSONL: question, expected_source, expected_answer.")],
    collection: CollectionOpt = DEFAULT_COLLECTION,
    k: KOpt = 3,
    mode: ModeOpt = "hybrid",
    answers: Annotated[
        bool,
        typer.Option("--answers/--no-answers", help="Also generate answers: token-F1 and citation checks."),
    ] = True,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    min_score: MinScoreOpt = DEFAULT_MIN_SCORE,
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    as_json: JsonOpt = False,
) -> None:
    """hit@k and MRR of retrieval; token-F1 and citation coverage of answers (no judge model needed)."""
    from lokal.rag.eval import EvalReport, evaluate, load_qa

    m = _mode(mode)

    async def main() -> EvalReport:
        items = load_qa(qa_file)
        retriever = _open_retriever(collection)
        client = make_client(base_url, api_key) if answers else None
        try:
            return await evaluate(
                retriever,
                items,
                k=k,
                mode=m,
                client=client,
                model=model,
                min_score=min_score,
                max_tokens=max_tokens,
            )
        finally:
            if client is not None:
                await client.close()

    report = _run(lambda: asyncio.run(main()))
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    table = Table("question", f"rank (≤{k})", "F1", "cited", "coverage")
    for r in report.rows:
        table.add_row(
            escape(r.question[:60]),
            "-" if not r.expects_source else str(r.rank) if r.rank else "miss",
            "-" if r.f1 is None else f"{r.f1:.2f}",
            "refused" if r.refused else "-" if r.cited_expected is None else "yes" if r.cited_expected else "no",
            "-" if r.coverage is None else f"{r.coverage:.2f}",
        )
    out.print(table)
    for name, value in report.summary().items():
        shown = "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        out.print(f"{name:>22}: {shown}")


@app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """Collections in LOKAL_HOME/rag."""
    infos = list_collections()
    if as_json:
        out.print_json(json.dumps([i.to_dict() for i in infos]))
        return
    if not infos:
        out.print("no collections yet: lokal rag ingest PATH --collection NAME")
        return
    table = Table("collection", "documents", "chunks", "size", "file")
    for i in infos:
        table.add_row(i.name, str(i.documents), str(i.chunks), f"{i.size_bytes / 2**20:.1f} MiB", str(i.path))
    out.print(table)


@app.command()
def drop(
    collection: Annotated[str, typer.Argument(help="Collection to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a collection's index file (your documents are not touched)."""
    if not yes:
        typer.confirm(f"delete collection {collection!r}?", abort=True)
    _run(lambda: delete_collection(collection))
    out.print(f"deleted collection {collection}")
