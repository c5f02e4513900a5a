"""The documentation against the code: the key reference against the schema, the spec table against the
registries, the README's shape, and every link, module and command the pages name."""
import importlib
import pathlib
import re

import pytest

import easycls
from easycls.config.schema import SCHEMA
from easycls.core.spellings import OLD_SPELLINGS
from easycls.optim.losses import LOSSES
from easycls.optim.optimizers import OPTIMIZERS
from easycls.optim.schedulers import SCHEDULERS

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ROW = re.compile(r"^\| `([^`]+)` \| `(.*)` \| (.*) \|$")


def _section(path: pathlib.Path, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    text = path.read_text()
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    end = re.search(rf"\n#{{1,{len(level)}}} ", text[start + 1:])
    return text[start:start + 1 + end.start()] if end else text[start:]


def _key_rows() -> dict:
    rows = [ROW.match(line) for line in _section(ROOT / "docs" / "config.md", "## Key reference").splitlines()]
    return {m.group(1): (m.group(2), m.group(3).replace("`", "")) for m in rows if m}


def test_every_schema_key_is_in_the_key_reference_and_every_documented_key_exists():
    documented = _key_rows()
    assert [key for key in SCHEMA if key not in documented] == []
    assert [key for key in documented if key not in SCHEMA] == []


def test_the_key_reference_shows_each_key_s_default_and_allowed_values():
    documented = _key_rows()
    assert {k: documented[k][0] for k in SCHEMA if documented[k][0] != repr(SCHEMA[k].default)} == {}
    assert {k: documented[k][1] for k in SCHEMA if documented[k][1] != SCHEMA[k].allowed} == {}


def test_the_old_spellings_table_is_the_alias_table():
    table = _section(ROOT / "docs" / "config.md", "### Old spellings")
    assert dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|$", table, re.MULTILINE)) == OLD_SPELLINGS


def test_the_spec_table_lists_every_registered_spec():
    documented = set(re.findall(r"^\| (?:loss|optimizer|scheduler) \| .* \|$", (ROOT / "docs" / "specs.md").read_text(),
                                re.MULTILINE))
    registered = {f"| {kind} | `{e.usage()}` | `{e.example}` | {e.help} |"
                  for kind, registry in (("loss", LOSSES), ("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS))
                  for e in registry.entries()}
    assert sorted(registered - documented) == [] and sorted(documented - registered) == []


def test_the_readme_is_a_short_tour_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "pip install -e . && python train.py\n" in text
    assert 'pip install -e ".[test]" && python -m pytest -q\n' in text
    for heading in ("## Install and run: the two commands", "## Everyday workflow", "## Python API",
                    "## Documentation"):
        assert f"\n{heading}\n" in text


def _anchors(path: pathlib.Path) -> set:
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (anchor and anchor not in _anchors(path)):
            broken.append(target)
    assert broken == []


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda p: p.name)
def test_every_module_and_name_the_docs_give_exists(page):
    """Paths that moved with the layer subpackages (easycls.data.audit, easycls.optim.losses, ...) stay right."""
    names = set(re.findall(r"\beasycls(?:\.[A-Za-z_]\w*)+", page.read_text()))
    assert sorted(n for n in names if not _resolves(n)) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_source_file_the_docs_name_exists(page):
    text = page.read_text()
    named = {ROOT / p for p in re.findall(r"`((?:easycls|configs|tests)/[\w/]+\.py)`", text)}
    layers = "core|data|models|optim|evaluation|engine|config|cli|bench"
    named |= {ROOT / "easycls" / p for p in re.findall(rf"`((?:{layers})/[\w/]+\.py)`", text)}
    assert sorted(str(p.relative_to(ROOT)) for p in named if not p.is_file()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_m_command_runs_a_main_module(page):
    for module in set(re.findall(r"python -m (easycls[\w.]*)", page.read_text())):
        path = ROOT.joinpath(*module.split("."))
        main = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
        assert main.is_file() and ("__main__" in main.name or 'if __name__ == "__main__":' in main.read_text()), \
            module


def test_the_readme_python_api_names_exist():
    if not hasattr(easycls, "train") and "train" not in getattr(easycls, "__all__", ()):
        pytest.skip("the Python API (easycls.train, ...) is not on this branch yet")
    api = _section(ROOT / "README.md", "## Python API")
    assert sorted(n for n in set(re.findall(r"\beasycls(?:\.[A-Za-z_]\w*)+", api)) if not _resolves(n)) == []
