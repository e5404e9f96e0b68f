"""One settings object per method: a pydantic model that is the recipe section, the CLI flags and the run input.

A method declares its knobs once, as fields of a ``Settings`` subclass with a
default and a description. The recipe schema uses the class as its section;
``add_flags`` turns every field into a command-line flag (name, default and
help taken from the field); ``from_flags`` builds the object back from the
parsed arguments, so a flag the user did not give takes the field's default,
and every value goes through the same validation as a recipe.

Flag forms: ``k_max`` is ``--k-max``; a field of a nested section (a ``Settings`` field, e.g. the search's
``unlink_mlp``) is ``--unlink-mlp-steps``; a list is comma-separated
(``--alphas 0.1,0.5``); a mapping is ``key=value`` pairs, comma-separated
(``--max-drop mmlu=0.02,perplexity_pct=2``); a bool is ``--vllm`` /
``--no-vllm``; a field that may be null takes ``none`` for null.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from editor.errors import EditorError


class Settings(BaseModel):
    """Base of every method's settings: strict about unknown keys (a misspelt key is an error), immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        return Union[tuple(args)], optional  # noqa: UP007 (a runtime union of the remaining members)
    return annotation, False


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) in (list, tuple)


def _is_dict(annotation: Any) -> bool:
    return get_origin(annotation) is dict


def _choices(annotation: Any) -> list[str] | None:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return None


def _describe_default(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return ",".join(str(v) for v in default) or "(empty)"
    return str(default)


def _section(annotation: Any) -> type[Settings] | None:
    """The settings class of a nested section field, or None for a plain field."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, Settings) else None


def add_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type[Settings],
    *,
    skip: tuple[str, ...] = (),
    group: str | None = None,
    prefix: str = "",
) -> None:
    """One flag per field of ``cls`` (except ``skip``); values stay unset unless given, so defaults live only in ``cls``.
    A nested section's fields get their own flags, named with the section's prefix (``prefix`` is used for that)."""
    target = parser.add_argument_group(group) if group else parser
    hints = typing.get_type_hints(cls)
    for name, info in cls.model_fields.items():
        if name in skip:
            continue
        annotation, optional = _unwrap_optional(hints[name])
        if (section := _section(annotation)) is not None:
            add_flags(target, section, prefix=f"{prefix}{name}_")
            continue
        help_text = f"{info.description or name.replace('_', ' ')} (default: {_describe_default(info)})".replace(
            "%", "%%"
        )
        dest = prefix + name
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        if annotation is bool:
            target.add_argument(flag_name(dest), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if _is_dict(annotation):
            kwargs["metavar"] = "KEY=VALUE,..."
        elif _is_list(annotation):
            item = get_args(annotation)[0] if get_args(annotation) else str
            choices = _choices(item)
            kwargs["metavar"] = "A,B,..." if choices is None else "{" + ",".join(choices) + "},..."
        else:
            choices = _choices(annotation)
            if choices is not None:
                kwargs["metavar"] = "{" + ",".join(choices) + ("," if optional else "") + ("none}" if optional else "}")
            else:
                kwargs["metavar"] = name.upper()
        target.add_argument(flag_name(dest), **kwargs)


def _convert(raw: str, annotation: Any) -> Any:
    """A flag's text as the value pydantic validates: lists split on commas, ``none`` for null."""
    annotation, optional = _unwrap_optional(annotation)
    if optional and raw.strip().lower() in ("none", "null"):
        return None
    if _is_list(annotation):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if _is_dict(annotation):  # key=value,key=value
        pairs = [part.partition("=") for part in raw.split(",") if part.strip()]
        return {key.strip(): value.strip() if sep else None for key, sep, value in pairs}
    return raw


def from_flags(cls: type[Settings], args: argparse.Namespace, *, skip: tuple[str, ...] = (), **fixed: Any) -> Settings:
    """The settings the parsed flags (and ``fixed`` values) describe; errors name the flag."""
    return validated(cls, {**_flag_values(cls, args, skip, ""), **fixed}, source="flags")


def _flag_values(cls: type[Settings], args: argparse.Namespace, skip: tuple[str, ...], prefix: str) -> dict[str, Any]:
    """The values of the flags the user gave, nested as the sections are."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name in cls.model_fields:
        if name in skip:
            continue
        annotation, _ = _unwrap_optional(hints[name])
        if (section := _section(annotation)) is not None:
            if nested := _flag_values(section, args, (), f"{prefix}{name}_"):
                values[name] = nested
            continue
        if not hasattr(args, prefix + name):
            continue
        raw = getattr(args, prefix + name)
        values[name] = raw if isinstance(raw, bool) else _convert(str(raw), hints[name])
    return values


def _is_section(cls: type[Settings], name: str) -> bool:
    info = cls.model_fields.get(name)
    return info is not None and _section(_unwrap_optional(info.annotation)[0]) is not None


def validated(cls: type[Settings], values: dict[str, Any], *, source: str = "flags") -> Settings:
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"]]
        message = first["msg"].removeprefix("Value error, ")
        if loc:
            where = flag_name("_".join(loc[:2]) if len(loc) > 1 and _is_section(cls, loc[0]) else loc[0])
            where = where if source == "flags" else ".".join(loc)
            raise EditorError(f"{where}: {message}") from None
        if source == "flags":  # a rule across fields names them; on the command line they are flags
            message = re.sub(
                r"\b(" + "|".join(sorted(cls.model_fields, key=len, reverse=True)) + r")\b",
                lambda m: flag_name(m.group(1)),
                message,
            )
        raise EditorError(message) from None
