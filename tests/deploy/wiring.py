"""What the code expects of its environment: the variables Settings reads, the CLI's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import AliasChoices

from service.cli import build_parser
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

#: Variables the service reads outside Settings: botocore's credential chain, the migrations
#: folder of an installed package.
OTHER_APP_VARIABLES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MIGRATIONS_DIR"})


def settings_variables() -> set[str]:
    """Every environment variable name Settings reads (field names and aliases, upper case)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(name.upper())
    return names


def cli_commands() -> set[str]:
    """The subcommands of `song-detection`."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("song-detection has no subcommands")
