"""Reading recipe values: YAML with YAML 1.2 booleans and `1e-4` floats, values checked against their fields'
annotations, and every problem as one `RecipeError` sentence naming the file, the key and what was expected."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot run; the message says which key and how to fix it."""


def plain(value: Any) -> Any:
    """Tuples -> lists so that the YAML stays plain (safe_load-able)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `eval_strategy: no` as False."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

# PyYAML reads 1e-4 (no dot) as a string; recipes write learning rates that way.
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(text: str, source: str = "recipe") -> Any:
    """YAML text -> value; malformed YAML raises RecipeError naming `source` (the recipe file, or the override flag
    with its value) and the line and column, not PyYAML's '"<unicode string>", line 3' with its own layout."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: not valid YAML {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`at line L, column C: <what PyYAML expected> (<the construct it was reading>, from line K)` in one line."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context:
        since = f", from line {context_mark.line + 1}" if context_mark is not None else ""
        problem += f" ({' '.join(context.split())}{since})"
    return f"{where}: {problem}"


BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation; {} when the annotations cannot be resolved (then nothing is checked)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001  (a forward reference of another library: skip the type check)
        return {}


def typed_value(value: Any, hint: Any, key: str, path: str | None) -> Any:
    """Check (and for booleans, read) `value` against a simple annotation: bool, int, float, or those | None.
    Booleans take true/false, yes/no, on/off, 1/0; ints take ints; floats take numbers. Sizes, epochs and batch
    sizes must be positive. Other annotations are left to the dataclass."""
    args = (
        typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    )
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), None) if len(args) == 2 and optional else hint
    if value is None and optional or base not in (bool, int, float):
        return value
    where = f"{path or 'recipe'}: {key}"
    if base is bool:
        word = str(value).strip().lower() if isinstance(value, str | int) else None
        if isinstance(value, bool) or word in BOOL_WORDS:
            return value if isinstance(value, bool) else BOOL_WORDS[word]
        raise RecipeError(f"{where}: expected true or false (yes/no, 1/0), got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or (base is int and not isinstance(value, int)):
        raise RecipeError(f"{where}: expected {'an integer' if base is int else 'a number'}, got {value!r}")
    name = key.rsplit(".", 1)[-1]
    if any(part in name for part in ("size", "epochs", "batch")) and value <= 0:
        raise RecipeError(f"{where}: must be positive, got {value!r}")
    return value  # an int is a valid float: kept as written (recipe.yaml shows what the user typed)


def unknown_message(what: str, unknown: set[str], known, path: str | None) -> str:
    key = sorted(unknown)[0]
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else f" Known: {sorted(known)}"
    return f"{path or 'recipe'}: unknown {what} {key!r}.{hint}"
