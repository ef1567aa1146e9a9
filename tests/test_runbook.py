"""The runbook names only commands that exist, and every alert links to a section of it."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from mgw.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()


def _commands() -> list[str]:
    spans = re.findall(r"`(mgw [^`]+)`", RUNBOOK)
    blocks = re.findall(r"```sh\n(.*?)```", RUNBOOK, re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines()]
    found = spans + [ln[ln.index("mgw ") :] for ln in lines if ln.startswith("mgw ")]
    return sorted(set(found))


def _words(command: str) -> list[str]:
    """The command's words up to the first placeholder (``<id>``) or shell syntax; a
    placeholder value of an option is kept (``--keep 2``), a placeholder word stops."""
    out = []
    for w in shlex.split(command.replace("$(", " (").replace("<", "\x00"))[1:]:
        if "\x00" in w or any(ch in w for ch in "|;&(") or w == "...":
            break
        out.append(w)
    return out


def _refusal(words: list[str]) -> str | None:
    """What argparse says when it does not know a command or an option."""
    err = io.StringIO()
    # a missing required argument is fine here: the runbook leaves values to the reader
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.suppress(SystemExit),
    ):
        build_parser().parse_args(words)
    text = err.getvalue()
    return text if "unrecognized arguments" in text or "invalid choice" in text else None


@pytest.mark.parametrize("command", _commands())
def test_every_mgw_command_in_the_runbook_parses(command: str) -> None:
    words = _words(command)
    if words:
        assert _refusal(words) is None, f"`{command}`: {_refusal(words)}"


def test_the_runbook_names_the_commands_operators_need() -> None:
    names = {_words(c)[0] for c in _commands() if _words(c)}
    assert {"migrate", "rebuild", "replay", "checksum", "dlq", "backup", "restore", "keys"} <= names


def test_every_alert_links_to_a_section_of_the_runbook() -> None:
    rules = yaml.safe_load((ROOT / "ops" / "prometheus" / "alerts.yml").read_text())
    anchors = set(re.findall(r'<a id="([a-z-]+)"></a>', RUNBOOK))
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url.startswith("docs/runbook.md#"), url
            assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: {url}"
