"""Schemas as code. `Key` and `check_table`: the one mechanism that checks every TOML table
bpcbench reads (bench matrices, the ladder config, the corpus manifest) and of the JSON records
`merge` and `nightly` read (shard.json, nightly.json). `Column`: one column
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

import reprlib
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
    maximum: int | None = None  # integers: the largest allowed value
    required: bool = False
    llm: bool = True  # bench matrices: also allowed in [[llm]] tables

    def accepts(self, value: object) -> bool:
        types = self.types if isinstance(self.types, tuple) else (self.types,)
        if isinstance(value, bool) and bool not in types:  # TOML true is no integer here
            return False
        return isinstance(value, types)


def check_table(table: object, keys: dict[str, Key], where: str, *, others: bool = False) -> dict:
    """`table` with every key known, every required key present, every value of its Key's types
    and within its minimum and maximum; else one BpcError naming `where`, the key and the value.
    others: keys not in `keys` pass unchecked (a file whose other fields this reader does not use)."""
    if not isinstance(table, dict):
        raise BpcError(f"{where}: must be a table")
    unknown = sorted(map(str, set(table) - set(keys)))
    if unknown and not others:
        raise BpcError(f"{where}: unknown key {shown(unknown[0])} (known: {', '.join(keys)})")
    missing = [k for k, key in keys.items() if key.required and k not in table]
    if missing:
        raise BpcError(f"{where}: missing key {missing[0]!r}")
    for name, value in table.items():
        if name not in keys:
            continue
        key = keys[name]
        if not key.accepts(value):
            raise BpcError(f"{where}: {name} must be {key.what}, got {shown(value)}")
        if key.minimum is not None and isinstance(value, int) and value < key.minimum:
            raise BpcError(f"{where}: {name} must be >= {key.minimum}, got {shown(value)}")
        if key.maximum is not None and isinstance(value, int) and value > key.maximum:
            raise BpcError(f"{where}: {name} must be <= {key.maximum}, got {shown(value)}")
    return table


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = 60
_SHOWN.maxlevel = 3


def shown(value: object) -> str:
    """repr(value) cut to a few dozen characters: a forged value (a megabyte string, a nested list, a
    400-digit integer) still makes a one-line message of readable length.

    >>> len(shown("x" * 10**6)), shown("abc")
    (60, "'abc'")
    >>> shown([[[[1]]]]), shown(2)
    ('[[[[...]]]]', '2')
    """
    return _SHOWN.repr(value)


@dataclass(frozen=True)
class Column:
    """One CSV column: its name, type (str, int, float or bool; all nullable), unit and meaning."""

    name: str
    dtype: str  # str | int | float | bool (all nullable)
    unit: str
    doc: str
