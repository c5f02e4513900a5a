"""String specs of the form ``name-arg-arg`` and the small registries that resolve them.

Losses, optimizers and schedulers are chosen in ``config.py`` by short strings such as ``"SGDR-5-2"`` or
``"Focalloss-2"``. Each registry maps a name (matched case-insensitively and exactly, never by substring) to a
builder with typed, optionally defaulted arguments.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from easycls.core.errors import SpecError


def int_list(text: str) -> List[int]:
    """Parse ``"30,60"`` into ``[30, 60]``."""
    return [int(part) for part in text.split(",")]


int_list.__name__ = "int,int,..."
_TYPE_NAMES = {int: "int", float: "float"}


@dataclass(frozen=True)
class Arg:
    """One positional argument of a spec."""

    name: str
    type: Callable
    default: object = None

    def describe(self) -> str:
        return f"<{self.name}:{_TYPE_NAMES.get(self.type, self.type.__name__)}>"


@dataclass(frozen=True)
class Entry:
    """A registered name: its builder, arguments, an example and a one-line description."""

    name: str
    builder: Callable
    args: Tuple[Arg, ...]
    example: str
    help: str

    def usage(self) -> str:
        return "-".join([self.name] + [a.describe() for a in self.args])


class Registry:
    """Name -> builder table for one kind of spec (loss, optimizer or scheduler)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, args: Sequence[Arg] = (), example: Optional[str] = None, help: str = ""):
        """Decorator that registers ``builder`` under ``name``."""

        def wrap(builder: Callable) -> Callable:
            self._entries[name.lower()] = Entry(name, builder, tuple(args), example or name, help)
            return builder

        return wrap

    def names(self) -> List[str]:
        return sorted((e.name for e in self._entries.values()), key=str.lower)

    def entries(self) -> List[Entry]:
        return [self._entries[n.lower()] for n in self.names()]

    def get(self, name: str) -> Optional[Entry]:
        return self._entries.get(name.lower())

    def parse(self, spec: str) -> Tuple[Entry, list]:
        """Resolve ``spec`` into its entry and typed argument values, or raise :class:`SpecError`."""
        if not isinstance(spec, str) or not spec.strip():
            raise self.error(spec, "a spec must be a non-empty string")
        name, *raw = spec.strip().split("-")
        entry = self.get(name)
        if entry is None:
            raise self.error(spec, f"unknown {self.kind} '{name}'")
        if len(raw) > len(entry.args):
            raise self.error(spec, f"'{entry.name}' takes at most {len(entry.args)} argument(s): {entry.usage()}")
        values = []
        for i, arg in enumerate(entry.args):
            if i >= len(raw):
                if arg.default is None:
                    raise self.error(spec, f"'{entry.name}' needs {arg.describe()}: {entry.usage()}")
                values.append(arg.default)
                continue
            try:
                values.append(arg.type(raw[i]))
            except ValueError:
                raise self.error(spec, f"argument {arg.describe()} got '{raw[i]}'") from None
        return entry, values

    def error(self, spec, reason: str) -> SpecError:
        valid = ", ".join(e.usage() for e in self.entries())
        examples = ", ".join(f'"{e.example}"' for e in self.entries()[:3])
        return SpecError(f"bad {self.kind} spec {spec!r}: {reason}. Valid: {valid}. Examples: {examples}")
