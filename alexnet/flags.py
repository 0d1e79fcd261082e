"""A dataclass's fields as command-line flags, and back: one `--flag` per field, typed from its default, its help
the comment the field carries in the source, so a field added to `TrainConfig` or `ExperimentPlan` is a flag of
`train` or `experiment` with no more code, and the Compare page's command line is written the same way.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import io
import shlex
import textwrap
import tokenize
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, fields
from typing import Any

__all__ = ["field_comments", "add_field_flags", "given_values", "field_flags"]

Choices = Mapping[str, "Sequence[str] | Mapping[str, str]"]


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment on its own line of the class body (`lr: float = 0.05  # peak learning rate`).

    Empty where the source cannot be read (a frozen install): the flags then have no help, nothing else changes.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    return {node.target.id: comments[node.end_lineno] for node in body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.end_lineno in comments}


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _flag(name: str, renamed: Mapping[str, str]) -> str:
    return "--" + renamed.get(name, name).replace("_", "-")


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_field_flags(parser: argparse.ArgumentParser, cls: type, renamed: Mapping[str, str] | None = None,
                    choices: Choices | None = None) -> None:
    """One flag per field of `cls`, each defaulting to None (not given: the dataclass's default, or a base's).

    renamed: a field's flag name where it is not the field's own (data_dir -> --data);
    choices: the values a field takes, as a list or as {value: what it means} (listed in the help).
    """
    renamed, choices, helps = renamed or {}, choices or {}, field_comments(cls)
    for f in fields(cls):
        default = _default(f)
        allowed = choices.get(f.name)
        text = helps.get(f.name, "")
        if isinstance(allowed, Mapping):
            text += (": " if text else "") + "; ".join(f"{value}: {meaning}" for value, meaning in allowed.items())
        if default is not None and default != []:
            text += f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})"
        options: dict[str, Any] = dict(dest=f.name, default=None, help=text.strip().replace("%", "%%") or None)
        if isinstance(default, bool):
            options["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, list):
            options.update(type=_int_list, metavar="N,N")
        else:
            options["type"] = type(default) if default is not None else str
        if allowed is not None:
            options["choices"] = list(allowed)
        elif not isinstance(default, (bool, list)):
            options["metavar"] = renamed.get(f.name, f.name).upper()
        parser.add_argument(_flag(f.name, renamed), **options)


def given_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields whose flags were given on the command line, with their values."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def field_flags(obj: Any, renamed: Mapping[str, str] | None = None, always: Sequence[str] = ()) -> list[str]:
    """The flags that give `obj`'s values (those that differ from the defaults, and the fields named in `always`),
    as `add_field_flags` reads them, in field order and quoted for a shell."""
    renamed, out = renamed or {}, []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name not in always and value == _default(f):
            continue
        flag = _flag(f.name, renamed)
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            out += [flag, shlex.quote(text)]
    return out
