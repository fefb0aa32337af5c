# Copyright (C) 2026 anomalib-fastflow2d developers
# SPDX-License-Identifier: Apache-2.0

"""Through the stock ``anomalib`` command, the plugin's errors read as their message and fix, anomalib's as before."""

import os
import subprocess

import pytest
from anomalib.cli import AnomalibCLI
from anomalib.cli import cli as cli_module

from anomalib_fastflow2d import cli_errors
from anomalib_fastflow2d.presets import resolve_preset
from tests.conftest import ANOMALIB

EXPORT = ["export", "--model", "Fastflow2D", "--export_type", "openvino"]

COMMANDS: dict[str, list[str]] = {
    "backbone typo": ["fit", "--model", "Fastflow2D", "--model.backbone", "resnet181"],
    "missing checkpoint": [*EXPORT, "--ckpt_path", "missing.ckpt"],
    "untrained export": EXPORT,
    "anomalib's own error": [
        "fit",
        "--model",
        "Padim",
        "--model.backbone",
        "resnet181",
        "--model.pre_trained",
        "false",
    ],
}
"""One failing command line per case; all fail before any training, in about the time anomalib takes to import."""

SHOWN: dict[str, tuple[str, ...]] = {
    "backbone typo": ("Unknown backbone 'resnet181'", "presets"),
    "missing checkpoint": ("missing.ckpt", "Pass the path of a model.ckpt"),
    "untrained export": ("Not exporting Fastflow2D", "--ckpt_path"),
}
"""What each plugin error's report must say: the reason and the fix."""

MAX_REPORT_LINES = 10


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every command at once: each spends most of its time importing anomalib."""
    folder = tmp_path_factory.mktemp("cli_errors")
    environment = {name: value for name, value in os.environ.items() if name != cli_errors.TRACEBACK_VARIABLE}
    environment.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    processes = {
        case: subprocess.Popen(
            [ANOMALIB, *arguments],
            cwd=folder,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, arguments in COMMANDS.items()
    }
    results = {}
    for case, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        results[case] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("case", SHOWN)
def test_the_plugins_errors_print_their_message_and_fix_in_a_few_lines(
    outputs: dict[str, subprocess.CompletedProcess[str]], case: str
) -> None:
    result = outputs[case]
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    report = lines[max(index for index, line in enumerate(lines) if line.startswith("error: ")) :]
    assert len(report) <= MAX_REPORT_LINES, "\n".join(report)
    for text in SHOWN[case]:
        assert text in "\n".join(report)
    assert cli_errors.TRACEBACK_VARIABLE in report[-1]


def test_anomalibs_own_errors_keep_their_traceback(outputs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = outputs["anomalib's own error"]
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "resnet181" in result.stderr


def _unknown_backbone() -> None:
    resolve_preset("resnet181")


def test_main_prints_the_plugins_error_and_reraises_it_when_the_traceback_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main = cli_errors._shorten_errors(_unknown_backbone)
    monkeypatch.delenv(cli_errors.TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: Unknown backbone 'resnet181'.")

    monkeypatch.setenv(cli_errors.TRACEBACK_VARIABLE, "1")
    with pytest.raises(ValueError, match="Unknown backbone"):
        main()


def test_main_reraises_other_errors() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        cli_errors._shorten_errors(lambda: int("resnet181"))()


@pytest.mark.parametrize(
    ("option", "given", "meant"),
    [("--model", "FastFlow2D", "Fastflow2D"), ("--data", "cifar10oneclass", "CIFAR10OneClass")],
)
def test_a_wrongly_cased_class_name_gets_the_right_one(
    capsys: pytest.CaptureFixture[str], option: str, given: str, meant: str
) -> None:
    arguments = ["fit", "--model", "Fastflow2D", option, given]
    with pytest.raises(SystemExit) as exit_info:
        AnomalibCLI(arguments, run=False)
    assert exit_info.value.code == 2
    assert f'Did you mean "{meant}"?' in capsys.readouterr().err


def test_other_unknown_class_names_get_no_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        AnomalibCLI(["fit", "--model", "NoSuchModel"], run=False)
    assert "Did you mean" not in capsys.readouterr().err


def test_the_plugins_own_errors_are_told_apart_by_where_they_were_raised() -> None:
    with pytest.raises(ValueError, match="Unknown backbone") as plugin_error:
        resolve_preset("resnet181")
    assert cli_errors.raised_by_plugin(plugin_error.value)
    with pytest.raises(ValueError, match="invalid literal") as python_error:
        int("resnet181")
    assert not cli_errors.raised_by_plugin(python_error.value)
    # A bug of the plugin's stops its frame at the failing instruction, not at a raise statement.
    namespace: dict[str, object] = {}
    exec(compile("def bug():\n    return None.backbone\n", cli_errors.PACKAGE_DIRECTORY + "bug.py", "exec"), namespace)  # noqa: S102
    with pytest.raises(AttributeError) as bug:
        namespace["bug"]()
    assert not cli_errors.raised_by_plugin(bug.value)


def test_installing_twice_wraps_once() -> None:
    main = cli_module.main
    init_parser = AnomalibCLI.init_parser
    cli_errors.install(cli_module)
    assert cli_module.main is main
    assert AnomalibCLI.init_parser is init_parser
