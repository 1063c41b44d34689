"""What the READMEs and the Makefile say about each other: the extras installed, the demo's time, the install line."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def makefile_extras() -> str:
    return re.search(r"^EXTRAS \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_readmes_name_the_makefiles_extras(readme):
    text = (ROOT / readme).read_text()
    full = [
        x for x in re.findall(r'pip install -e "\.\[([^\]]+)\]"', text) if "dev" in x.split(",")
    ]  # what make installs
    assert full == [makefile_extras()]


def test_the_chinese_readme_gives_the_demos_measured_time():
    minutes, seconds = re.search(r"`make demo` took (\d+) min (\d+) s", (ROOT / "README.md").read_text()).groups()
    text = (ROOT / "README.zh-CN.md").read_text()
    assert f"{minutes} 分 {seconds} 秒" in text and "约需 5 分钟" not in text


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_install_says_what_it_does_before_pip():
    # PIP=true: the recipe runs, pip does not
    out = subprocess.run(["make", "-s", "install", "PIP=true"], cwd=ROOT, capture_output=True, text=True, check=True)
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"installing alexnet with its extras [{makefile_extras()}] into ")
    assert "downloads PyTorch" in first
