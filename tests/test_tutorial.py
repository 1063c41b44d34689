"""The tutorial runs as written: every ```python block of docs/tutorial.md and docs/tutorial.zh-CN.md, in order, in
one namespace, in a fresh process and an empty working directory; ```bash run blocks too (``alexnet`` becomes
``python -m alexnet``). Blocks marked ```python no-run and plain ```bash blocks are shown only.

A failure's traceback names the Markdown file and the line in it. Both languages must carry the same code (comments
aside), and every relative link in the tutorial pages must point at a file that exists.
"""

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.zh-CN.md"]
PAGES = [*DOCS, ROOT / "README.zh-CN.md"]

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)

# Execs each block compiled with its Markdown file and line, so tracebacks point into the page.
RUNNER = r"""
import json, subprocess, sys
ns = {"__name__": "__main__"}
for b in json.load(open(sys.argv[1], encoding="utf-8")):
    print(f"--- {b['path']}:{b['line']}", flush=True)
    if b["lang"] == "python":
        exec(compile("\n" * b["line"] + b["code"], b["path"], "exec"), ns)
    else:
        subprocess.run(["bash", "-euo", "pipefail", "-c", b["code"]], check=True)
"""


@dataclass
class Block:
    lang: str
    flags: list[str]
    code: str
    line: int  # of the opening fence, 1-based

    @property
    def runs(self) -> bool:
        return (self.lang == "python" and "no-run" not in self.flags) or (self.lang == "bash" and "run" in self.flags)


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        lang, *flags = m.group(1).split() or [""]
        out.append(Block(lang, flags, m.group(2), text.count("\n", 0, m.start()) + 1))
    return out


def run_blocks(path: Path, workdir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the page's runnable blocks in ``workdir``; returns the finished process (stdout and stderr as text)."""
    workdir.mkdir(parents=True, exist_ok=True)
    alexnet_cmd = f"{shlex.quote(sys.executable)} -m alexnet"
    todo = [
        dict(
            lang=b.lang,
            path=str(path),
            line=b.line,
            code=b.code if b.lang == "python" else re.sub(r"^alexnet(?= |$)", alexnet_cmd, b.code, flags=re.M),
        )
        for b in blocks(path)
        if b.runs
    ]
    (workdir / "blocks.json").write_text(json.dumps(todo), encoding="utf-8")
    (workdir / "runner.py").write_text(RUNNER, encoding="utf-8")
    # One BLAS / OpenMP thread: the page's float64 ops are small, and on 2 shared cores two spinning threads per
    # library measured 2-10x slower than one (the smoke training run is 3 steps; its speed is not the point).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "runner.py", "blocks.json"], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def code_tokens(block: Block) -> list[tuple[int, str]]:
    """The block's code without comments and layout: what must agree between the two languages."""
    if block.lang != "python":
        return [(0, line.split("#")[0].strip()) for line in block.code.splitlines() if line.split("#")[0].strip()]
    skip = {tokenize.COMMENT, tokenize.NL}
    return [
        (t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(block.code).readline) if t.type not in skip
    ]


# ----------------------------------------------------------------------------------------------------------------


# the English page only: the Chinese page's code is the same, token for token (test_both_languages_carry_the_same_code),
# and running it again cost 17-25 s of the suite
@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS[:1], ids=lambda p: p.name)
def test_tutorial_code_runs(doc, tmp_path):
    assert sum(b.runs for b in blocks(doc)) >= 10, f"{doc}: expected the tutorial's code blocks"
    try:
        proc = run_blocks(doc, tmp_path / "work")
        assert proc.returncode == 0, f"{doc} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    finally:
        shutil.rmtree(tmp_path / "work", ignore_errors=True)  # the smoke run's checkpoints are ~0.9 GB


def test_both_languages_carry_the_same_code():
    english, chinese = ([b for b in blocks(doc) if b.runs] for doc in DOCS)
    assert len(english) == len(chinese)
    for e, c in zip(english, chinese):
        assert code_tokens(e) == code_tokens(c), f"tutorial.md:{e.line} and tutorial.zh-CN.md:{c.line} differ"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, f"{page} has no links"
    for link in links:
        target = link.split("#")[0]
        if target and not re.match(r"[a-z]+:", target):
            assert (page.parent / target).exists(), f"{page.name}: broken link {link}"


def test_runner_runs_marked_blocks_and_reports_the_failing_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n```python no-run\nraise SystemExit(3)\n```\n\n"
        "```bash\nexit 4\n```\n\n```bash run\nalexnet --help > help.txt\n```\n\n"
        "```python\nassert open('help.txt').read()\nassert x == 2, 'x is not 2'\n```\n",
        encoding="utf-8",
    )
    proc = run_blocks(page, tmp_path / "work")
    assert proc.returncode == 1, proc.stderr
    assert f'File "{page}", line 21' in proc.stderr and "x is not 2" in proc.stderr
    assert (tmp_path / "work" / "help.txt").read_text().strip()  # the bash run block ran, via python -m alexnet
