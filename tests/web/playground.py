"""Drives the playground page the way a user does: pickers, the prompt box, labels, buttons."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import Page, Request


@dataclass
class ChatRequests:
    """Every POST /v1/chat/completions the page sends, as parsed bodies plus headers."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
            self.bodies.append(json.loads(request.post_data or "{}"))
            self.headers.append(request.headers)


def open_playground(page: Page, url: str, *, expect: str = "ok") -> ChatRequests:
    requests = ChatRequests()
    page.on("request", requests)
    page.goto(url + "/")
    page.wait_for_selector(f"#server-status[data-state={expect}]")
    return requests


def assistant_messages(page: Page, pane: str = "a") -> Any:
    return page.locator(f"#pane-{pane} .msg.assistant")


def send(page: Page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")


def wait_finished(page: Page, count: int, pane: str = "a", timeout: float = 20_000) -> None:
    """Waits until the pane holds `count` answers and none is still streaming."""
    page.wait_for_function(
        """([pane, count]) => {
            const all = document.querySelectorAll(`#pane-${pane} .msg.assistant`);
            return all.length === count && [...all].every((m) => m.dataset.state !== "streaming");
        }""",
        arg=[pane, count],
        timeout=timeout,
    )


def chart_state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        """() => {
            const svg = document.querySelector("#chart svg");
            const bars = [...svg.querySelectorAll("rect.bar")].map((r) => ({
                model: r.dataset.model, metric: r.dataset.metric, value: Number(r.dataset.value),
                state: r.classList.contains("stopped") ? "stopped" : r.classList.contains("done") ? "done" : "other",
            }));
            const rows = [...document.querySelectorAll("#latency-summary tr[data-model]")].map((tr) =>
                [...tr.children].map((td) => td.textContent));
            return { answers: Number(svg.dataset.answers), models: svg.dataset.models, bars, rows };
        }"""
    )
    return result


def record_growth(page: Page, pane: str = "a") -> None:
    """Records the length of the newest answer's text on every DOM mutation, into window.__lengths."""
    page.evaluate(
        """(pane) => {
            window.__lengths = [];
            const box = document.querySelector(`#pane-${pane} .messages`);
            new MutationObserver(() => {
                const bodies = box.querySelectorAll(".msg.assistant .msg-body");
                if (bodies.length) window.__lengths.push(bodies[bodies.length - 1].textContent.length);
            }).observe(box, { subtree: true, childList: true, characterData: true });
        }""",
        pane,
    )
