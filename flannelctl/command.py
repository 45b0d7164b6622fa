"""What a flannelctl command is: its name, its help, its own arguments and the function that runs it.

Each command module defines one :class:`Command`; ``cli.py`` builds the parser from them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command that takes only the common options."""


@dataclass(frozen=True)
class Command:
    """One ``flannelctl COMMAND``: ``run`` returns the exit status (CtlError is exit status 2)."""

    name: str
    help: str
    description: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments

    def add_to(
        self, sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
    ) -> None:
        """Add this command's parser to ``sub``; it takes ``common``'s options too."""
        parser = sub.add_parser(self.name, parents=[common], help=self.help, description=self.description)
        self.arguments(parser)
        parser.set_defaults(run=self.run)
