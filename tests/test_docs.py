"""docs/api.md's code blocks run as written, in order, in a temporary folder."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow
def test_api_page_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "api.md").read_text(), flags=re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)
    assert (tmp_path / "run" / "best.pt").is_file()
    assert (tmp_path / "cars-pred" / "sub.csv").is_file()


def test_readme_opens_with_the_two_commands():
    readme = (DOCS.parent / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (DOCS.parent / ".ci" / "run").read_text()


def test_docs_cover_what_a_user_needs():
    pages = {p.name: p.read_text() for p in DOCS.glob("*.md")}
    for page in ("getting_started.md", "data.md", "configs.md", "adding_a_dataset.md", "api.md"):
        assert page in pages, page
    assert "Adding an architecture" in pages["models.md"]
    examples = pages["examples.md"]
    assert "examples/helen_faces/" in examples and "examples/carvana_single_class/" in examples
    for page in ("data.md", "configs.md", "examples.md", "api.md", "adding_a_dataset.md"):
        assert f"]({page})" in pages["getting_started.md"], page
