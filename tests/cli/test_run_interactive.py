"""`lokal run` interactive, driven in a pseudo-terminal: /help, /set, /show, multi-line, Ctrl-C, /reset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect

from lokal.cli.run import Session
from tests.support.models import standard_entries, write_catalog


def test_session_settings() -> None:
    s = Session(None, None, 0.7)
    assert s.set("temperature 0.2") == "set temperature" and s.temperature == 0.2
    assert s.set("max_tokens 9") == "set max_tokens" and s.max_tokens == 9
    assert s.set("system be brief") == "set system" and s.messages()[0] == {"role": "system", "content": "be brief"}
    assert s.set("temperature hot").startswith("not a number") and s.set("colour red").startswith("usage")


def test_interactive_chat_in_a_pty(tiny_gguf: Path, tmp_path: Path) -> None:
    write_catalog(tmp_path, standard_entries(tiny_gguf))
    env = {
        **os.environ,
        "LOKAL_HOME": str(tmp_path),
        "LOKAL_OFFLINE": "1",
        "LOKAL_PORT": "1",
        "COLUMNS": "100",
        "NO_COLOR": "1",
    }
    child = pexpect.spawn(
        sys.executable,
        ["-m", "lokal", "run", "tiny", "--local", "--max-tokens", "4"],
        env=env,
        timeout=90,
        encoding="utf-8",
    )
    try:
        child.expect("SYNTHETIC")  # the tiny GGUF is from the synthetic writer: said before the first answer
        child.expect(">>> ")
        child.sendline("/help")
        child.expect("/set temperature")
        child.expect(">>> ")
        child.sendline("/set temperature 0.1")
        child.expect("set temperature")
        child.expect(">>> ")
        child.sendline('"""first line')
        child.expect(r"\.\.\. ")
        child.sendline('second line"""')
        child.expect(">>> ")  # answered
        child.sendcontrol("c")  # at the prompt: a hint, not an exit
        child.expect("Ctrl-D or /bye")
        child.sendline("/show")
        child.expect(r"temperature 0.1 .* 1 exchanges in history")
        child.expect(">>> ")
        child.sendline("/reset")
        child.expect(r"forget the conversation\? \[y/N\]")
        child.sendline("n")
        child.expect(">>> ")
        child.sendline("/show")
        child.expect("1 exchanges in history")  # "n" kept it
        child.expect(">>> ")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
