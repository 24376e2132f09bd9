"""The `foundry` command: Foundry Local's CLI verbs, served by lokal, so scripts and the SDK work unchanged.

Foundry Local's SDK runs `foundry service status` and takes the first `http://HOST:PORT` in its output, and
runs `foundry service start` then polls status ten times at 0.1 s. So status imports little (typer and
lokal.foundry.service: no fastapi, llama_cpp, torch or httpx), and a service that is still starting is waited
for rather than reported absent. `model` verbs talk to the server over Foundry's REST routes (starting it when
needed); `cache` verbs work on the files directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from lokal.cli import _common, ps_rows
from lokal.config import get_settings
from lokal.foundry import service

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    name="foundry",
    help="Foundry Local's CLI, answered by lokal (models run behind http://127.0.0.1:5273/v1).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
service_app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the background lokal server.")
model_app = typer.Typer(no_args_is_help=True, help="List, download, load and run models.")
cache_app = typer.Typer(no_args_is_help=True, help="The local model cache.")
app.add_typer(service_app, name="service")
# The newer Foundry CLI calls the service "server" (`foundry server status|logs`); the same verbs answer both.
app.add_typer(service_app, name="server", help="The background lokal server (the newer CLI's name for service).")
app.add_typer(model_app, name="model")
app.add_typer(cache_app, name="cache")


def _print_version(value: bool) -> None:
    if value:
        from lokal.cli.main import version

        # The number first, as Foundry prints it: scripts that read `foundry --version` take the first word.
        typer.echo(f"{version()} (lokal, answering Foundry Local's CLI and REST API)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Foundry Local's CLI, answered by lokal (models run behind http://127.0.0.1:5273/v1)."""


STARTING_WAIT_S = 60.0  # how long `service status` waits for a server that is still starting


# -- plumbing ----------------------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _message(resp: httpx.Response) -> str:
    return _common.server_message(resp) or resp.text or f"HTTP {resp.status_code}"


@contextmanager
def _readable_errors() -> Iterator[None]:
    """lokal's errors, service failures and HTTP trouble become one red line and exit code 1."""
    import httpx

    from lokal.errors import LokalError

    try:
        yield
    except LokalError as exc:
        _fail(exc.message)
    except service.ServiceError as exc:
        _fail(str(exc))
    except httpx.HTTPStatusError as exc:
        _fail(_message(exc.response))
    except httpx.HTTPError as exc:
        _fail(f"cannot talk to the lokal service: {exc or type(exc).__name__}")


def _running() -> service.ServiceInfo:
    """The service, started when needed (Foundry's model verbs start it too)."""
    found = service.status(wait=STARTING_WAIT_S)
    if found is not None and found.ready:
        return found
    typer.echo("Starting the lokal service ...", err=True)
    return service.start()


def pick(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The catalog entry the SDK's get_model_info would pick: exact id, id without version, then alias."""
    key = name.lower()
    for entry in entries:
        if str(entry["name"]).lower() == key:
            return entry
    same_name = [e for e in entries if str(e["name"]).lower().startswith(key + ":")]
    if same_name:
        return max(same_name, key=lambda e: int(e["version"]) if str(e["version"]).isdigit() else -1)
    for entry in entries:  # the list is ordered best variant first within each alias
        if str(entry["alias"]).lower() == key:
            return entry
    _fail(f"model {name!r} is not in the catalog; see `foundry model list`")


def _catalog(client: httpx.Client) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = _common.get(client, "/foundry/list")
    return entries


def _cached_ids(client: httpx.Client) -> set[str]:
    return set(_common.get(client, "/openai/models"))


def _synthetic_aliases(client: httpx.Client) -> set[str]:
    """Aliases whose model card says random weights (Foundry's list has no such field; lokal's cards do)."""
    cards = (_common.get(client, "/v1/models", all="true") or {}).get("data") or []
    return {c["id"] for c in cards if isinstance(c, dict) and (c.get("lokal") or {}).get("synthetic") is True}


def _mb(n: int | float) -> str:
    """`n` mebibytes (bytes / 2**20, and Foundry's fileSizeMb, which is counted the same way), labelled as such."""
    if n >= 1024:
        return f"{n / 1024:.2f} GiB"
    return f"{n:.1f} MiB" if n < 10 else f"{n:.0f} MiB"


# -- service -----------------------------------------------------------------------------------------------


@service_app.command("status")
def service_status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line for scripts.")] = False,
) -> None:
    """Say whether the service runs and where (the SDK parses the first http://HOST:PORT here)."""
    info = service.status(wait=STARTING_WAIT_S)
    if as_json:
        typer.echo(service.describe(info))
    elif info is None:
        typer.echo("Model management service is not running.")
    else:
        typer.echo(f"Model management service is running on {info.url}/openai/status")
        typer.echo(f"OpenAI-compatible endpoint: {info.base_url} (lokal, pid {info.pid or 'unknown'})")
    if info is None:
        raise typer.Exit(1)


@service_app.command("start")
def service_start() -> None:
    """Start lokal in the background (returns once it answers; it keeps running after this command)."""
    with _readable_errors():
        before = service.status()
        info = service.start()
    if before is not None and before.ready:
        typer.echo(f"Service is already running on {info.url}/ (pid {info.pid or 'unknown'}).")
    else:
        typer.echo(f"Service is started on {info.url}/, PID {info.pid}!")


@service_app.command("stop")
def service_stop() -> None:
    """Stop the background lokal server."""
    with _readable_errors():
        stopped = service.stop()
    typer.echo("Service is stopped." if stopped else "Service is not running.")


@service_app.command("restart")
def service_restart() -> None:
    """Stop, then start the background lokal server."""
    with _readable_errors():
        info = service.restart()
    typer.echo(f"Service is started on {info.url}/, PID {info.pid}!")


@service_app.command("logs")
def service_logs(
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many of the last lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")] = False,
) -> None:
    """The background server's log (LOKAL_HOME/logs/service.log): its last lines, or followed as it grows."""
    import time

    path = service.log_path()
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh.readlines()[-lines:]:
                typer.echo(line.rstrip("\n"))
            while follow:
                line = fh.readline()
                if line:
                    typer.echo(line.rstrip("\n"))
                else:
                    time.sleep(0.2)
    except FileNotFoundError:
        _fail(f"no service log at {path} yet: the service has not been started with `foundry service start`")
    except KeyboardInterrupt:
        pass


@service_app.command("ps")
def service_ps() -> None:
    """Models loaded in the service, with memory and time left before they unload."""
    info = service.status(wait=STARTING_WAIT_S)
    if info is None:
        _fail("the model management service is not running; start it with `foundry service start`")
    with _readable_errors(), _common.http_client(info.url) as client:
        try:
            models = ps_rows.models(_common.get(client, "/lokal/ps"))
        except ValueError:  # not JSON: some other server, or a broken one
            _fail(f"the service at {info.url} did not answer /lokal/ps with JSON")
    if not models:
        typer.echo("No models are loaded.")
        return
    typer.echo("Models running in service:")
    typer.echo(f"    {'Alias':<28} {'Model ID':<44} {'Memory':>10} {'TTL left':>9}")
    for m in models:
        size = ps_rows.number(m.get("memory_bytes"))
        memory = "-" if size is None else _mb(size / 2**20)
        alias, model_id = ps_rows.text(m.get("alias")), ps_rows.text(m.get("id"))
        typer.echo(f"    {alias:<28} {model_id:<44} {memory:>10} {ps_rows.fmt(m.get('ttl_left'), '.0f', 's'):>9}")


# -- model -------------------------------------------------------------------------------------------------


@model_app.command("ls", hidden=True)
@model_app.command("list")
def model_list() -> None:
    """Every catalog model, best variant for this machine first within each alias."""
    with _readable_errors(), _common.http_client(_running().url) as client:
        entries, cached, synthetic = _catalog(client), _cached_ids(client), _synthetic_aliases(client)
    typer.echo(f"{'Alias':<28} {'Device':<6} {'Task':<16} {'File Size':>10}  {'License':<14} Model ID")
    for e in entries:
        mark = "  (cached)" if e["name"] in cached else ""
        size = _mb(e["fileSizeMb"]) if e["fileSizeMb"] else "-"
        # In the alias column: scripts that take the id from the end of the line, "(cached)" last, still can.
        alias = f"{e['alias']} [SYNTHETIC]" if e["alias"] in synthetic else e["alias"]
        typer.echo(
            f"{alias:<28} {e['runtime']['deviceType']:<6} {e['task']:<16} {size:>10}  "
            f"{e['license'][:14]:<14} {e['name']}{mark}"
        )


@model_app.command("info")
def model_info(
    model: Annotated[str, typer.Argument(help="Alias or model id.")],
    as_json: Annotated[bool, typer.Option("--json", help="The catalog entry as JSON.")] = False,
    license: Annotated[bool, typer.Option("--license", help="Only the model's license.")] = False,
) -> None:
    """Details of the model the SDK would pick for this alias or id."""
    with _readable_errors(), _common.http_client(_running().url) as client:
        entry, cached = pick(_catalog(client), model), _cached_ids(client)
    if license:
        typer.echo(f"License for {entry['name']}: {entry['license']}")
        described = entry.get("licenseDescription")
        if described and described != entry["license"]:
            typer.echo(described)
        return
    if as_json:
        typer.echo(json.dumps(entry, indent=2))
        return
    rows = {
        "Model ID": entry["name"],
        "Alias": entry["alias"],
        "Display name": entry["displayName"],
        "Device": f"{entry['runtime']['deviceType']} ({entry['runtime']['executionProvider']})",
        "Task": entry["task"],
        "Format": entry["modelType"],
        "File size": _mb(entry["fileSizeMb"]) if entry["fileSizeMb"] else "unknown",
        "Publisher": entry["publisher"],
        "License": entry["license"],
        "Tool calling": "yes" if entry["supportsToolCalling"] else "no",
        "Source": entry["uri"],
        "Cached": "yes" if entry["name"] in cached else "no",
    }
    for key, value in rows.items():
        typer.echo(f"{key + ':':<14} {value}")


def _download(client: httpx.Client, entry: dict[str, Any]) -> None:
    body = {
        "model": {"Name": entry["name"], "Uri": entry["uri"], "Publisher": entry["publisher"],
                  "ProviderType": entry["providerType"], "PromptTemplate": entry["promptTemplate"]},
        "token": None,
        "IgnorePipeReport": True,
    }  # fmt: skip
    outcome: dict[str, Any] = {}
    tty = sys.stderr.isatty()
    with client.stream("POST", "/openai/download", json=body, timeout=None) as resp:
        for line in resp.iter_lines():
            if line.startswith("{"):
                outcome = json.loads(line)
            elif line.strip():
                typer.echo(("\r" if tty else "") + line.strip(), err=True, nl=not tty)
    if tty:
        typer.echo("", err=True)
    if not outcome.get("success"):
        _fail(f"download of {entry['name']} failed: {outcome.get('errorMessage') or 'unknown error'}")


@model_app.command("download")
def model_download(model: Annotated[str, typer.Argument(help="Alias or model id.")]) -> None:
    """Download a model into the cache (resumes an interrupted download)."""
    with _readable_errors(), _common.http_client(_running().url, timeout=None) as client:
        entry = pick(_catalog(client), model)
        if entry["name"] in _cached_ids(client):
            typer.echo(f"Model {entry['name']} is already downloaded.")
            return
        _download(client, entry)
    typer.echo(f"Model {entry['name']} was downloaded.")


def _load(client: httpx.Client, entry: dict[str, Any], ttl: int | None, keep: bool = False) -> None:
    """Load; `keep` asks for no idle unload (Foundry's `unload=false`)."""
    params: dict[str, Any] = {"ttl": ttl} if ttl else {}
    if keep:
        params["unload"] = "false"
    resp = client.get(f"/openai/load/{entry['name']}", params=params or None, timeout=None)
    if resp.status_code >= 400:
        _fail(_message(resp))


@model_app.command("load")
def model_load(
    model: Annotated[str, typer.Argument(help="Alias or model id.")],
    ttl: Annotated[int | None, typer.Option(help="Unload after this many idle seconds.")] = None,
) -> None:
    """Load a downloaded model into the service's memory."""
    with _readable_errors(), _common.http_client(_running().url) as client:
        entry = pick(_catalog(client), model)
        _load(client, entry, ttl)
    typer.echo(f"Model {entry['name']} loaded.")


@model_app.command("unload")
def model_unload(
    model: Annotated[str, typer.Argument(help="Alias or model id.")],
    force: Annotated[bool, typer.Option(help="Unload even with requests in flight.")] = False,
) -> None:
    """Unload a model from the service's memory."""
    info = service.status(wait=STARTING_WAIT_S)
    if info is None:
        typer.echo("Service is not running: no model is loaded.")
        return
    with _readable_errors(), _common.http_client(info.url) as client:
        entry = pick(_catalog(client), model)
        unloaded = _common.get(client, f"/openai/unload/{entry['name']}", force=str(force).lower())["unloaded"]
    typer.echo(f"Model {entry['name']} unloaded." if unloaded else f"Model {entry['name']} was not loaded.")


def _chat(
    client: httpx.Client, model_id: str, messages: list[dict[str, str]], max_tokens: int, verbose: bool = False
) -> str:
    import time

    body = {
        "model": model_id,
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }
    parts: list[str] = []
    started, first, tokens = time.perf_counter(), None, None
    with client.stream("POST", "/v1/chat/completions", json=body, timeout=None) as resp:
        if resp.status_code >= 400:
            resp.read()
            _fail(_message(resp))
        for line in resp.iter_lines():
            data = line.removeprefix("data:").strip()
            if not line.startswith("data:") or data == "[DONE]":
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                _fail(str(chunk["error"].get("message", chunk["error"])))
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content") or ""
                if text and first is None:
                    first = time.perf_counter()
                parts.append(text)
                typer.echo(text, nl=False)
    typer.echo("")
    if verbose:
        _stats(time.perf_counter() - started, None if first is None else first - started, tokens)
    return "".join(parts)


def _stats(total: float, ttft: float | None, tokens: int | None) -> None:
    """What `--verbose` adds after each answer, on stderr so the answer itself stays clean."""
    shown = [f"total {total:.2f}s"]
    if ttft is not None:
        shown.append(f"time to first token {ttft:.2f}s")
    if tokens is not None:
        shown.append(f"{tokens} tokens")
        if ttft is not None and total > ttft and tokens > 1:
            shown.append(f"{(tokens - 1) / (total - ttft):.1f} tokens/s")
    typer.echo("[" + ", ".join(shown) + "]", err=True)


@model_app.command("run")
def model_run(
    model: Annotated[str, typer.Argument(help="Alias or model id.")],
    prompt: Annotated[str | None, typer.Option(help="Answer this one prompt and exit.")] = None,
    ttl: Annotated[int | None, typer.Option(help="Unload after this many idle seconds.")] = None,
    retain: Annotated[
        bool | None,
        typer.Option(
            "--retain/--no-retain",
            help="--retain: keep the model loaded after the session, with no idle unload; "
            "--no-retain: unload it when the session ends. [default: loaded, unloaded after the TTL]",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Print load time, time to first token and tokens/s (stderr).")
    ] = False,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 512,
) -> None:
    """Download (when needed), load and chat: one-shot with --prompt, else interactive until EOF or 'exit'."""
    import time

    with _readable_errors(), _common.http_client(_running().url, timeout=None) as client:
        entry = pick(_catalog(client), model)
        if verbose:
            typer.echo(f"Model {entry['name']} ({entry['alias']}), service {client.base_url}", err=True)
        if entry["name"] not in _cached_ids(client):
            _download(client, entry)
        started = time.perf_counter()
        _load(client, entry, ttl, keep=retain is True and ttl is None)
        if verbose:
            typer.echo(f"Model loaded in {time.perf_counter() - started:.2f}s", err=True)
        try:
            _session(client, entry, prompt, max_tokens, verbose)
        finally:
            if retain is False:
                _common.get(client, f"/openai/unload/{entry['name']}", force="true")
                if verbose:
                    typer.echo(f"Model {entry['name']} unloaded (--no-retain).", err=True)


def _session(client: httpx.Client, entry: dict[str, Any], prompt: str | None, max_tokens: int, verbose: bool) -> None:
    if prompt is not None:
        _chat(client, entry["name"], [{"role": "user", "content": prompt}], max_tokens, verbose)
        return
    typer.echo(f"Chatting with {entry['alias']} ({entry['name']}). Type 'exit' or press Ctrl-D to leave.")
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if line.strip() in {"exit", "/exit", "/bye"}:
            break
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        answer = _chat(client, entry["name"], history, max_tokens, verbose)
        history.append({"role": "assistant", "content": answer})


# The newer Foundry CLI's `foundry run ALIAS`: the same as `foundry model run`.
app.command("run", help="Download, load and chat with a model (the same as `foundry model run`).")(model_run)


# -- cache -------------------------------------------------------------------------------------------------


@cache_app.command("location")
def cache_location() -> None:
    """Where models are stored (LOKAL_HOME/models)."""
    typer.echo(f"Cache directory path: {get_settings().models_dir}")


@cache_app.command("pwd")
def cache_pwd() -> None:
    """Print the cache folder (as `cache location`)."""
    typer.echo(f"Cache directory path: {get_settings().models_dir}")


@cache_app.command("cd")
def cache_cd(
    path: Annotated[Path, typer.Argument(help="Folder to keep models in from now on.")],
) -> None:
    """Keep models in another folder. lokal's cache is LOKAL_HOME/models: it becomes a link to PATH. Models
    already in the cache are not moved (as with Foundry); a running service is restarted to see the change."""
    from lokal.cli.cache_dir import CacheDirError, point_cache_at

    settings = get_settings()
    try:
        target = point_cache_at(settings.models_dir, path)
    except CacheDirError as exc:
        _fail(str(exc))
    typer.echo(f"Cache directory path: {target}")
    info = service.status()
    if info is not None and info.ready:
        with _readable_errors():
            service.restart()
        typer.echo("Service restarted to use the new cache directory.")


@cache_app.command("ls", hidden=True)
@cache_app.command("list")
def cache_list() -> None:
    """Models in the cache (downloaded, or brought with `lokal model add`)."""
    from lokal.catalog.cache import Cache, tree_size
    from lokal.catalog.catalog import Catalog

    with _readable_errors():
        settings = get_settings()
        cache = Cache(settings)
        rows = [
            (spec.alias, v.id, tree_size(cache.path_for(v)))
            for spec, v in Catalog.load(settings).variants()
            if v.needs_artifact and cache.is_cached(v)
        ]
    if not rows:
        typer.echo("No models are cached.")
        return
    typer.echo("Models cached on device:")
    typer.echo(f"    {'Alias':<28} {'Size':>10}  Model ID")
    for alias, model_id, size in rows:
        typer.echo(f"    {alias:<28} {_mb(size / 2**20):>10}  {model_id}")


@cache_app.command("remove")
def cache_remove(
    model: Annotated[str, typer.Argument(help="Alias or model id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a downloaded model from the cache (unloading it first when the service has it loaded)."""
    from lokal.catalog.cache import Cache
    from lokal.catalog.catalog import Catalog

    with _readable_errors():
        settings = get_settings()
        spec, variant = Catalog.load(settings).resolve(model)
        cache = Cache(settings)
        if variant.is_upstream or not cache.is_cached(variant):
            typer.echo(f"Model {variant.id} is not in the cache.")
            return
        if not yes:
            typer.confirm(f"Delete {variant.id} ({spec.alias}) from {cache.root}?", abort=True)
        info = service.status()
        if info is not None and info.ready:
            with _common.http_client(info.url) as client:
                _common.get(client, f"/openai/unload/{variant.id}", force="true")
        freed = cache.remove(variant)
    typer.echo(f"Removed {variant.id} ({_mb(freed / 2**20)}).")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
