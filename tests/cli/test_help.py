"""Every flag of every command says what it does in -h; the deprecated spellings still parse."""

from __future__ import annotations

import argparse

import pytest

from bpcbench.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix: str = "bpcbench"):
    """(name, parser, help line) of the top-level parser and of every subcommand, recursively."""
    yield prefix, parser, "top level"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{prefix} {name}: no one-line help in `{prefix} -h`"
                yield from _commands(sub, f"{prefix} {name}")


COMMANDS = list(_commands(build_parser()))


@pytest.mark.parametrize("name, parser, _", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_flag_has_help(name, parser, _):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        what = "/".join(action.option_strings) or action.dest
        assert action.help == argparse.SUPPRESS or (action.help or "").strip(), f"{name} {what}: no help"
    parser.format_help()  # a bad %-format in a help string fails here


def test_the_commands_users_expect_are_there():
    names = {c[0].split(" ", 1)[1] for c in COMMANDS if " " in c[0]}
    assert {"compress", "decompress", "bench", "report", "compare", "merge", "nightly", "ladder", "lossy"} <= names


def test_top_level_help_reads_as_user_help():
    text = build_parser().format_help()
    assert "Compress files with a language model" in text and "examples:" in text
    assert "kB = 1000 bytes" in text and "MiB = 2^20 bytes" in text


def test_output_directories_are_all_called_out():
    parser = build_parser()
    for argv in (["bench", "--out", "d"], ["ladder", "--out", "d"], ["lossy", "t", "--out", "d"],
                 ["nightly", "--out", "d"], ["merge", "--out", "d", "s1"]):
        assert parser.parse_args(argv).out == "d", argv


def test_nightly_results_dir_is_a_hidden_deprecated_alias(capsys):
    parser = build_parser()
    assert parser.parse_args(["nightly"]).out == "results"
    assert parser.parse_args(["nightly", "--results-dir", "old"]).out == "old"
    assert "is deprecated; use --out" in capsys.readouterr().err
    nightly = next(c[1] for c in COMMANDS if c[0] == "bpcbench nightly")
    assert "--results-dir" not in nightly.format_help()


def test_merge_needs_out(capsys):
    assert main(["merge", "merged", "s1", "s2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
