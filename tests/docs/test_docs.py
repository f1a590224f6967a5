"""Run every ```python block of the concept docs, in order, in one namespace per page."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["concepts.md", "plugins.md"]


def _blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_doc_snippets_run(page, tmp_path, monkeypatch):
    from nnint import plugins

    monkeypatch.chdir(tmp_path)
    blocks = _blocks((DOCS / page).read_text())
    assert blocks, f"{page} has no python blocks"
    namespace: dict = {"__name__": f"docs_{page.replace('.', '_')}"}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{page}[block {i}]", "exec"), namespace)
    finally:
        plugins.reset_plugin_manager()
