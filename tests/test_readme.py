"""Every ```python block of README.md runs as written.

The rules (what a reader may assume when copying a block):

- **Sections.** A block runs after the earlier blocks of its `##` section, in one interpreter
  (their names and files are there: the API section's imports come once, at its top); `###`
  subsections belong to their `##` section.  Each `##` section starts from nothing, in a new
  empty folder (the current directory), in its own Python process (a block may register a
  method or set global state without touching another section or this test process).
- **Files.** A block finds only the files its section's earlier blocks wrote, and those the
  text right before it (since the previous code block or heading) says how to make: a
  `gradvis ... --out FILE` command quoted there, whose FILE the block uses, is run first in
  the section's folder, as the reader would.
- **Servers.** A block whose text right before it carries the comment
  `<!-- test_readme: needs the Triton server above -->` runs up to its first request to the
  server: it must end with tritonclient's error on that request (no server here), on a line
  with `client.infer`, and nowhere else.
- **The C++ runtime.** A section that loads with `backend="cpp"` is skipped (not passed) when
  `gradvis_runtime._cpp` was not built, saying so — and fails under GRADVIS_REQUIRE_CPP_OPTIONS=1
  (.ci/run builds the C++ runtime and sets it).

Indented blocks (inside a list item) are dedented.  Line numbers in failures are README's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from runtime_cases import require_cpp_option

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SERVER = "<!-- test_readme: needs the Triton server above -->"
COMMAND = re.compile(r"`(gradvis [^`]*--out ([^\s`]+)[^`]*)`")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass
class Block:
    line: int  # README line of the block's first code line
    code: str
    lead: str  # the text since the previous code block or heading
    commands: list[list[str]] = field(default_factory=list)
    server: bool = False


def sections(text: str) -> dict[str, list[Block]]:
    """`##` section title -> its python blocks, in order (sections without one left out)."""
    found: dict[str, list[Block]] = {}
    title, lead = "", []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            if lines[i].startswith("#"):
                if lines[i].startswith("## "):
                    title = lines[i][3:].strip()
                lead = []
            else:
                lead.append(lines[i])
            i += 1
            continue
        indent, language = fence.groups()
        end = i + 1
        while not re.fullmatch(rf"{indent}```\s*", lines[end]):
            end += 1
        if language == "python":
            code = textwrap.dedent("\n".join(lines[i + 1 : end]))
            prose = "\n".join(lead)
            block = Block(i + 2, code, prose, server=SERVER in prose)
            for command, out in COMMAND.findall(prose):
                if out in code:
                    block.commands.append(command.split())
            found.setdefault(title, []).append(block)
        lead = []
        i = end + 1
    return found


SECTIONS = sections(README.read_text(encoding="utf-8"))

#: runs one section's blocks in this process's interpreter, one namespace; prints one JSON line
CHILD = r"""
import json, subprocess, sys, traceback
blocks = json.load(open(sys.argv[1]))
scope = {"__name__": "__main__"}
for block in blocks:
    for command in block["commands"]:
        argv = [sys.executable, "-m", "gradvis_export.apps.cli", *command[1:]]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            print(json.dumps({"line": block["line"], "command": " ".join(command),
                              "error": (done.stdout + done.stderr)[-2000:]}))
            sys.exit(1)
    code = compile("\n" * (block["line"] - 1) + block["code"], "README.md", "exec")
    try:
        exec(code, scope)
    except BaseException as error:
        lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
                 if f.filename == "README.md"]
        print(json.dumps({"line": lines[-1] if lines else block["line"],
                          "type": f"{type(error).__module__}.{type(error).__name__}",
                          "error": str(error)[:2000], "server": block["server"],
                          "traceback": traceback.format_exc()[-3000:]}))
        sys.exit(1)
print(json.dumps({"ok": True}))
"""


def test_every_python_block_is_found():
    """The parser sees the README's python blocks (a changed fence would hide one)."""
    text = README.read_text(encoding="utf-8")
    opened = len(re.findall(r"^\s*```python\s*$", text, flags=re.M))
    assert opened >= 8
    assert sum(len(blocks) for blocks in SECTIONS.values()) == opened


@dataclass
class Run:
    """One section's process, started with the others (see `started`)."""

    process: subprocess.Popen
    out: Path
    err: Path


@pytest.fixture(scope="module")
def started(request, tmp_path_factory) -> Iterator[dict[str, Run]]:
    """The selected sections' processes, all started at once: each is mostly single-threaded
    exporting, so on 2 cores they take about half the time one after another would (< 60 s
    for the whole README); each keeps one torch thread."""
    titles = []
    for item in request.session.items:
        title = getattr(item, "callspec", None) and item.callspec.params.get("title")
        if item.originalname == "test_readme_section_runs" and title not in titles:
            titles.append(title)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for title in titles:
        folder = tmp_path_factory.mktemp("readme")
        plan = folder / "blocks.json"
        plan.write_text(json.dumps([vars(b) for b in SECTIONS[title]]))
        (folder / "cwd").mkdir()
        out, err = folder / "stdout", folder / "stderr"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(plan)],
                cwd=folder / "cwd",
                stdout=stdout,
                stderr=stderr,
                env=env,
            )
        runs[title] = Run(process, out, err)
    yield runs
    for run in runs.values():  # a test stopped early leaves no process behind
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@pytest.mark.parametrize("title", list(SECTIONS))
def test_readme_section_runs(title, started):
    run = started[title]
    run.process.wait(timeout=600)
    stdout = run.out.read_text()
    report = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {}
    if report.get("ok"):
        return
    readme = README.read_text(encoding="utf-8").splitlines()
    where = readme[report["line"] - 1].strip() if "line" in report else "?"
    if "command" in report:
        pytest.fail(f"README.md:{report['line']}: `{report['command']}` failed:\n{report['error']}")
    if "type" not in report:
        pytest.fail(f"the section {title!r} did not report:\n{run.err.read_text()[-3000:]}")
    if report["server"] and report["type"].startswith("tritonclient") and "client.infer" in where:
        return  # ran up to its first request: the server is not here
    if report["type"] == "builtins.ImportError" and "gradvis_runtime._cpp" in report["error"]:
        # a machine without the C++ build skips; under .ci/run (which builds it and sets
        # GRADVIS_REQUIRE_CPP_OPTIONS=1) this fails
        require_cpp_option(
            False, f"README.md:{report['line']}: needs the C++ runtime: {report['error']}"
        )
    pytest.fail(
        f"README.md:{report['line']}: {where}\n{report['type']}: {report['error']}\n"
        f"{report['traceback']}"
    )
