"""Command lines: every stage and `leaf` tool parses its arguments before doing anything.

`--help` prints a usage naming the program and exits 0 without touching a file; an unknown flag
exits 2 naming it; `leaf --help` lists the subcommands without importing any tool.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import types

import pytest
from helpers.processes import REPO_ROOT, run_python

from pipeline.io.console import PipelineError
from pipeline.tools import cli

STAGES = sorted(
    p.stem for p in (REPO_ROOT / "pipeline" / "stages").glob("*.py") if p.stem != "__init__"
)
HEAVY = ("torch", "albumentations", "timm", "cv2")
# Each tool's command line, with what it needs besides flags (a positional, a sub-subcommand).
TOOLS = {
    "predict": ["predict", "image.png"],
    "validate": ["validate", "sub.csv"],
    "preview": ["preview"],
    "kaggle download": ["kaggle", "download"],
    "kaggle submit": ["kaggle", "submit"],
    "preset": ["preset", "leaf-silhouettes"],
}

MAIN_ARGS = {
    "predict": ["image.png"],
    "validate": ["sub.csv"],
    "preview": [],
    "kaggle": ["download"],
}


def leaf(argv: list[str]) -> int:
    """Run `leaf ARGV` in-process; its exit code."""
    try:
        cli.main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def test_every_stage_in_dvc_yaml_is_covered():
    commands = (REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8")
    for stage in STAGES:
        assert f"-m pipeline.stages.{stage}" in commands


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_and_unknown_flag_touch_nothing(stage, tmp_path):
    prog = f"python3 -m pipeline.stages.{stage}"
    shown = run_python(["-m", f"pipeline.stages.{stage}", "--help"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: {prog} [-h]")
    assert f"Stage `{stage}`:" in shown.stdout  # the docstring's first line
    required = ["--model", "m", "--fold", "0"] if stage == "train" else []
    bad = run_python(["-m", f"pipeline.stages.{stage}", *required, "--no-such-flag"], tmp_path)
    assert bad.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in bad.stderr
    assert f"usage: {prog}" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", STAGES)
def test_stage_main_parses_its_argv(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    module = __import__(f"pipeline.stages.{stage}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert f"usage: python3 -m pipeline.stages.{stage}" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_train_keeps_its_cell_flags(capsys):
    from pipeline.stages import train

    args = train.parse_args(["--model", "d2l_resnet11", "--fold", "1"])
    assert (args.model, args.fold) == ("d2l_resnet11", 1)
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--fold", "1"])
    assert exit_.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_leaf_help_lists_the_subcommands_without_importing_tools(tmp_path):
    code = (
        "import sys\nfrom pipeline.tools.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit as e:\n    print('exit', e.code)\n"
        "print('loaded', sorted(m for m in sys.modules if m.startswith('pipeline.tools.')\n"
        "                    and m != 'pipeline.tools.cli'))\n"
        f"print('heavy', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = run_python(["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: leaf [-h] COMMAND ...")
    for command in cli.COMMANDS:  # a long name has its help on the next line
        assert re.search(rf"\n    {command}[ \n]", result.stdout), command
    assert "exit 0\nloaded []\nheavy []\n" in result.stdout
    assert "not available" not in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_subcommands_help_is_its_modules_first_docstring_line(command):
    module = importlib.import_module(cli.module_name(command))
    assert cli.summary(command) == module.__doc__.strip().splitlines()[0]


def test_leaf_validate_help_does_not_import_torch(tmp_path):
    code = (
        "import sys\nfrom pipeline.tools.cli import main\ntry:\n    main(['validate', '--help'])\n"
        "except SystemExit as e:\n    print('exit', e.code)\n"
        f"print('heavy', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = run_python(["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: leaf validate [-h]")
    assert result.stdout.endswith("exit 0\nheavy []\n")


def test_leaf_runs_as_a_module(tmp_path):
    result = run_python(["-m", "pipeline.tools.cli", "kaggle", "download", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: leaf kaggle download [-h]")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", TOOLS)
def test_tool_help_names_leaf_and_touches_nothing(name, tmp_path, monkeypatch, capsys):
    TOOLS[name]  # skips a tool not written yet
    monkeypatch.chdir(tmp_path)
    assert leaf([*name.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: leaf {name} [-h]")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", TOOLS)
def test_tool_unknown_flag_exits_2_naming_it(name, tmp_path, monkeypatch, capsys):
    argv = TOOLS[name]
    monkeypatch.chdir(tmp_path)
    assert leaf([*argv, "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-flag" in err
    assert f"usage: leaf {name.split()[0]}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module", ["predict", "validate", "preview", "kaggle"])
def test_tool_main_keeps_its_argv_interface(module, tmp_path, monkeypatch, capsys):
    tool = importlib.import_module(f"pipeline.tools.{module}")
    assert tool.__doc__.strip().splitlines()[0]  # the subcommand's help
    assert callable(tool.add_arguments) and callable(tool.run)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        tool.main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: leaf {module} [-h]")
    with pytest.raises(SystemExit) as exit_:
        tool.main([*MAIN_ARGS[module], "--no-such-flag"])
    assert exit_.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["predict", "x.png", "--top-k", "0"], "--top-k"),
        (["preview", "--images", "0"], "--images"),
        (["preview", "--samples", "-1"], "--samples"),
        (["preview", "--split", "x"], "--split"),
        (["validate", "a.csv", "--classes", "a", "--train-csv", "b"], "--train-csv"),
        (["kaggle"], "download,submit"),
        (["no-such-command"], "no-such-command"),
        ([], "COMMAND"),
    ],
)
def test_bad_arguments_exit_2_naming_them(argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert leaf(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and flag in err
    assert list(tmp_path.iterdir()) == []


def fake_tool(monkeypatch, run) -> None:
    """Make `leaf fake` a tool module whose `run` is `run`."""
    module = types.ModuleType("pipeline.tools.fake", "A fake tool.")
    module.add_arguments = lambda parser: parser.add_argument("--value", type=int, default=1)
    module.run = run
    monkeypatch.setitem(sys.modules, "pipeline.tools.fake", module)
    monkeypatch.setitem(cli.COMMANDS, "fake", "fake")


def test_leaf_passes_the_arguments_and_exits_0(monkeypatch):
    seen = []

    def run(args: argparse.Namespace) -> object:
        seen.append(args.value)
        return {"not": "an exit code"}

    fake_tool(monkeypatch, run)
    assert cli.main(["fake", "--value", "3"]) is None  # a result is not an exit code
    assert seen == [3]


def test_an_int_result_is_the_exit_code(monkeypatch, tmp_path):
    fake_tool(monkeypatch, lambda args: args.value)
    assert cli.main(["fake", "--value", "3"]) == 3
    result = run_python(["-m", "pipeline.tools.cli", "kaggle"], tmp_path)  # `sys.exit(main())`
    assert result.returncode == 2


@pytest.mark.parametrize("error", [PipelineError, "ParamsError"])
def test_a_users_error_is_one_error_paragraph_and_exit_2(error, monkeypatch, capsys):
    if error == "ParamsError":
        from pipeline.config.params import ParamsError as error

    def run(args: argparse.Namespace) -> None:
        raise error("params.yaml: train.epochs: must be at least 1")

    fake_tool(monkeypatch, run)
    assert leaf(["fake"]) == 2
    err = capsys.readouterr().err
    assert err == "error: params.yaml: train.epochs: must be at least 1\n"


def test_a_missing_tool_module_is_an_error_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "preset", "no_such_tool")
    assert leaf(["preset", "--help"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: `leaf preset` is not available: there is no module pipeline.tools.no_such_tool"
    )
    assert leaf(["--help"]) == 0  # the other subcommands still work
    assert "preset" in capsys.readouterr().out
    assert leaf(["kaggle", "download", "--help"]) == 0


def test_a_tool_run_below_the_project_root_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("base: {seed: 42}\n", encoding="utf-8")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert leaf(["validate", "../submissions/submission.csv"]) == 2
    err = capsys.readouterr().err
    assert f"runs in the project's root, {tmp_path.resolve()}" in err and "cd .." in err
