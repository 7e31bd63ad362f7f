"""Schemas as code. `Key` and `check_table`: the one mechanism that checks every TOML table
bpcbench reads (bench matrices, the ladder config, the corpus manifest). `Column`: one column
of a CSV bpcbench writes (results.csv, ladder.csv), rendered into their docs.

A Key says the types a value may have, the words an error uses for them, the docs text, a
default and a least value; the docs generators render the same tables, so what is checked and
what is documented cannot drift apart.

>>> keys = {"name": Key(str, "a string", "The name.", required=True),
...         "threads": Key(int, "a positive integer", "Threads.", 1, minimum=1)}
>>> check_table({"name": "x", "threads": 2}, keys, "[run]")
{'name': 'x', 'threads': 2}
>>> check_table({"name": "x", "threads": True}, keys, "[run]")
Traceback (most recent call last):
...
bpcbench.errors.BpcError: [run]: threads must be a positive integer, got True
"""

from __future__ import annotations

from dataclasses import dataclass

from bpcbench.errors import BpcError


@dataclass(frozen=True)
class Key:
    """One key of a TOML table, as the checker checks it and the docs show it."""

    types: type | tuple[type, ...]
    what: str  # the allowed values, as error messages say them
    doc: str = ""
    default: object = None  # None: unset (the doc says what that means)
    minimum: int | None = None  # integers: the least allowed value
    required: bool = False
    llm: bool = True  # bench matrices: also allowed in [[llm]] tables

    def accepts(self, value: object) -> bool:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if isinstance(value, bool) and bool not in types:  # TOML true is no integer here
            return False
        return isinstance(value, types)


def check_table(table: object, keys: dict[str, Key], where: str) -> dict:
    """`table` with every key known, every required key present, every value of its Key's types
    and at or above its minimum; else one BpcError naming `where`, the key and the value."""
    if not isinstance(table, dict):
        raise BpcError(f"{where}: must be a table")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise BpcError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(keys)})")
    missing = [k for k, key in keys.items() if key.required and k not in table]
    if missing:
        raise BpcError(f"{where}: missing key {missing[0]!r}")
    for name, value in table.items():
        key = keys[name]
        if not key.accepts(value):
            raise BpcError(f"{where}: {name} must be {key.what}, got {value!r}")
        if key.minimum is not None and isinstance(value, int) and value < key.minimum:
            raise BpcError(f"{where}: {name} must be >= {key.minimum}, got {value}")
    return table


@dataclass(frozen=True)
class Column:
    """One CSV column: its name, type (str, int, float or bool; all nullable), unit and meaning."""

    name: str
    dtype: str  # str | int | float | bool (all nullable)
    unit: str
    doc: str
