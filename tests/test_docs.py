# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""The documentation site states what the code does.

``make test`` builds the site with ``mkdocs build --strict``, which catches broken links and docstrings. It cannot
tell whether a page is right about the code; these tests check the facts that drift most easily: the nav, the
model page's argument and preset tables, and the options in the pages' command lines.
"""

import ast
import importlib
import inspect
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from anomalib.cli.cli import AnomalibCLI

from anomalib_fastflow2d import PRESETS, BackboneKind, Fastflow2D
from anomalib_fastflow2d.explain.__main__ import main as explain_main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODEL_PAGE = DOCS / "model.md"
FASTFLOW2D_ARGUMENTS = {
    name: parameter for name, parameter in inspect.signature(Fastflow2D.__init__).parameters.items() if name != "self"
}
KERNELS = {"3x3 only": True, "alternating 3x3, 1x1": False}


def nav_pages(nav: Any) -> list[str]:
    """The files of an mkdocs nav (nested lists and dicts), in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for entry in nav for page in nav_pages(entry)]
    return [page for entry in nav.values() for page in nav_pages(entry)]


def table_after(markdown: str, heading: str) -> list[list[str]]:
    """Cells of the first table after ``heading``, without its header and separator rows."""
    section = markdown.split(f"\n{heading}\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            # Split on pipes that are not escaped (`str \| None` is one cell).
            rows.append([cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif rows:
            break
    return rows[2:]


def unquote(cell: str) -> str:
    return cell.strip("`")


def shell_commands(markdown: str) -> list[list[str]]:
    """Every line of the page's ``bash`` blocks as shell words, continuation lines joined and comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)
    return [shlex.split(line, comments=True) for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def tool_invocations(name: str, pages: list[Path] | None = None) -> list[list[str]]:
    """The arguments of every call of ``name`` (a word sequence such as ``anomalib`` or ``python -m module``)."""
    words = name.split()
    invocations = []
    for page in sorted(DOCS.glob("*.md")) if pages is None else pages:
        for command in shell_commands(page.read_text(encoding="utf-8")):
            for start in range(len(command) - len(words) + 1):
                if command[start : start + len(words)] == words:
                    rest = command[start + len(words) :]
                    end = next((index for index, word in enumerate(rest) if word in {";", "&&", "|"}), len(rest))
                    invocations.append(rest[:end])
    return invocations


def option_values(invocations: list[list[str]], option: str) -> list[str]:
    return [words[index + 1] for words in invocations for index, word in enumerate(words[:-1]) if word == option]


def test_mkdocs_config_is_strict_and_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = nav_pages(config["nav"])

    assert config["strict"] is True
    assert config["docs_dir"] == "docs"
    assert [page for page in pages if not (DOCS / page).is_file()] == []
    assert sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")) == sorted(pages)


def test_argument_table_lists_every_fastflow2d_argument_in_order() -> None:
    rows = table_after(MODEL_PAGE.read_text(encoding="utf-8"), "## Arguments")

    assert [unquote(row[0]) for row in rows] == list(FASTFLOW2D_ARGUMENTS)


@pytest.mark.parametrize("name", list(FASTFLOW2D_ARGUMENTS))
def test_argument_table_gives_the_signature_default(name: str) -> None:
    rows = table_after(MODEL_PAGE.read_text(encoding="utf-8"), "## Arguments")
    default_cell = next(row[2] for row in rows if unquote(row[0]) == name)
    default = FASTFLOW2D_ARGUMENTS[name].default

    if default_cell == "preset":
        assert default is None
    else:
        assert ast.literal_eval(unquote(default_cell)) == default


def test_preset_table_gives_each_presets_values() -> None:
    rows = table_after(MODEL_PAGE.read_text(encoding="utf-8"), "## Presets")
    documented = {unquote(row[0]): row for row in rows}

    assert set(documented) == set(PRESETS)
    for backbone, (_, kind, stages, steps, kernels, hidden_ratio, input_size, _, source) in documented.items():
        preset = PRESETS[backbone]
        assert kind == {BackboneKind.CNN: "CNN", BackboneKind.VIT: "ViT"}[preset.kind], backbone
        assert ast.literal_eval(unquote(stages)) == preset.feature_stages, backbone
        assert int(steps) == preset.flow_steps, backbone
        assert KERNELS[kernels] == preset.conv3x3_only, backbone
        assert "paper" in source, backbone
        assert float(hidden_ratio) == preset.hidden_ratio, backbone
        assert tuple(int(side) for side in input_size.split("x")) == preset.input_size, backbone


def test_model_options_in_anomalib_commands_are_fastflow2d_arguments() -> None:
    invocations = tool_invocations("anomalib")
    # anomalib's own Fastflow appears only beside Fastflow2D, in the commands that compare the two.
    others = [words for words in invocations if option_values([words], "--model") == ["Fastflow"]]
    ours = [words for words in invocations if words not in others]
    model_options = [word for words in ours for word in words if word.startswith("--model.")]

    assert len(invocations) > 20  # the pages' commands were found at all
    assert model_options
    assert sorted({option.removeprefix("--model.") for option in model_options} - set(FASTFLOW2D_ARGUMENTS)) == []
    assert set(option_values(ours, "--model")) <= {"Fastflow2D", "anomalib_fastflow2d.Fastflow2D"}
    assert all("--data.seed" in words for words in others)  # one test split for both models


def test_config_files_in_anomalib_commands_exist() -> None:
    configs = option_values(tool_invocations("anomalib"), "--config")
    # Paths with shell variables are loops over the presets; their expansions are checked by name below.
    literal = [path for path in configs if "$" not in path]

    assert literal
    assert [path for path in literal if not (ROOT / path).is_file()] == []
    assert all((ROOT / "configs" / "model" / f"{backbone}.yaml").is_file() for backbone in PRESETS)


def runnable_anomalib_commands() -> list[list[str]]:
    """Every ``anomalib`` command of README.md and docs/; loops expanded, a ``...`` that stands for options dropped."""
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    commands: list[list[str]] = []
    for words in tool_invocations("anomalib", pages):
        kept = [word for index, word in enumerate(words) if word != "..." or words[index - 1].startswith("--")]
        line = " ".join(kept)
        presets = PRESETS if "${preset}" in line else [""]
        commands.extend(
            shlex.split(line.replace("${preset}", preset).replace("${category}", "bottle")) for preset in presets
        )
    return commands


@pytest.mark.parametrize("command", runnable_anomalib_commands(), ids=" ".join)
def test_anomalib_commands_in_readme_and_docs_parse_with_anomalib_27(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The stock CLI parses (and checks every option and config file of) the command, then prints the config and
    # exits 0; it trains, exports or downloads nothing. `benchmark` has no --print_config: it only parses.
    monkeypatch.chdir(ROOT)
    subcommand, *options = command
    if subcommand == "benchmark":
        AnomalibCLI(command, run=False)
        return
    with pytest.raises(SystemExit) as exit_:
        AnomalibCLI([subcommand, "--print_config", *options], run=False)
    assert exit_.value.code == 0, capsys.readouterr().err[-2000:]


def test_anomalib_command_check_catches_an_option_anomalib_27_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        AnomalibCLI(["predict", "--print_config", "--model", "Fastflow2D", "--data_path", "some/images"], run=False)

    assert exit_.value.code == 2
    assert "Unrecognized arguments: --data_path" in capsys.readouterr().err


def test_explain_command_options_exist(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        explain_main(["--help"])
    accepted = set(re.findall(r"--[a-z_]+", capsys.readouterr().out))
    used = {word for words in tool_invocations("python -m anomalib_fastflow2d.explain") for word in words}
    used_options = {word for word in used if word.startswith("--")}

    documented = table_after((DOCS / "explanation.md").read_text(encoding="utf-8"), "## The `explain` command")

    assert {"--ckpt_path", "--image", "--out"} <= used_options
    assert sorted(used_options - accepted) == []
    assert sorted(unquote(row[0]) for row in documented) == sorted(accepted - {"--help"})


def test_code_named_in_a_module_is_defined_there() -> None:
    # "`name` in `anomalib_fastflow2d/module.py`": the docs once placed a function in a module that only imports it.
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    pattern = re.compile(r"`(\w+)` in `(anomalib_fastflow2d/[\w/]+)\.py`")
    named = [match.groups() for page in pages for match in pattern.finditer(page.read_text(encoding="utf-8"))]

    assert named
    misplaced = [(name, path) for name, path in named if not _defined_in(name, path.replace("/", "."))]
    assert misplaced == []


def _defined_in(name: str, module_name: str) -> bool:
    """Whether ``module_name`` defines ``name``: holds it, and a function or class of that name is its own."""
    module = importlib.import_module(module_name)
    if name not in vars(module):
        return False
    return getattr(vars(module)[name], "__module__", module_name) == module_name


MEASURED_FIGURE = re.compile(r"\d(\.\d+)?x (faster|slower)|by up to \d|up to \d+(\.\d+)?x|\d+ of \d+ labels")
"""Phrases of measured speed and accuracy, which go stale in docstrings: they belong in docs/."""


def test_docstrings_keep_measured_figures_in_the_docs() -> None:
    sources = sorted((ROOT / "anomalib_fastflow2d").rglob("*.py"))
    found = [
        (source.name, docstring.strip().splitlines()[0])
        for source in sources
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and (docstring := ast.get_docstring(node))
        and MEASURED_FIGURE.search(docstring)
    ]
    assert found == []
