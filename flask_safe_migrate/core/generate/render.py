"""Write generated steps as a Python module of plain ``migrate.*`` calls.

The module is what a person would write by hand: one registration call per step,
a comment saying why the step has its form, destructive steps commented out, and
a backfill whose value is unknown guarded by a constant the module refuses to
load without. Lines fit in 88 columns, as ``ruff format`` leaves them.
"""

from __future__ import annotations

import re
import textwrap
import typing as t

from .steps import GeneratedStep
from .steps import StepKind

__all__ = ["render_module", "step_ids"]

_WIDTH = 88
_SQL_INDENT = "    "


def step_ids(prefix: str, steps: t.Sequence[GeneratedStep]) -> list[str]:
    """The id of each step: ``<prefix>_<nn>_<name>``, at most 120 characters."""
    ids = []
    for number, step in enumerate(steps, start=1):
        name = re.sub(r"[^a-z0-9]+", "_", step.name.lower()).strip("_")
        ids.append(f"{prefix}_{number:02d}_{name}"[:120].rstrip("_"))
    return ids


def render_module(
    *,
    title: str,
    prefix: str,
    registrar: str,
    steps: t.Sequence[GeneratedStep],
    where: str,
) -> str:
    """Return the source of the module registering ``steps`` on ``registrar``.

    :param title: the first docstring line (from the message).
    :param prefix: the start of every step id (``0008_add_lead_phone``).
    :param registrar: ``module:attribute`` of the app's ``SafeMigrate`` object.
    :param where: how a TODO's error names the file (its path).
    """
    ids = step_ids(prefix, steps)
    source = "\n\n".join(
        [_header(title, registrar, steps), *_values(steps, ids, where)]
    )
    previous_def = False
    for step_id, step in zip(ids, steps, strict=True):
        is_def = step.kind is StepKind.DROP_INDEX and step.active
        # ruff format: two blank lines around a function definition.
        source += "\n\n\n" if is_def or previous_def else "\n\n"
        source += _step(step_id, step)
        previous_def = is_def
    return source + "\n"


def _header(title: str, registrar: str, steps: t.Sequence[GeneratedStep]) -> str:
    module, _, attribute = registrar.partition(":")
    alias = "" if attribute == "migrate" else " as migrate"
    imports = []
    if any(s.value and s.active for s in steps):
        imports.append("from flask_safe_migrate import RegistrationError")
    if any(s.kind is StepKind.DROP_INDEX and s.active for s in steps):
        imports.append("from flask_safe_migrate import StepHandle")
    imports.sort()
    doc = "\n".join(
        _wrap(
            f"{_sentence(title)}: steps written by ``flask safe-migrate generate``.",
            "",
        )
    )
    return (
        f'"""{doc}\n\n'
        "Review each step before you commit it; every step is a plain call you can\n"
        "edit. They run in this order, all in one ``flask safe-migrate`` run.\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        + "".join(f"{line}\n" for line in imports)
        + ("\n" if imports else "")
        + f"from {module} import {attribute}{alias}"
    )


def _sentence(title: str) -> str:
    title = " ".join(title.split()).rstrip(".")
    return title[:1].upper() + title[1:]


def _values(
    steps: t.Sequence[GeneratedStep], ids: t.Sequence[str], where: str
) -> t.Iterator[str]:
    for step_id, step in zip(ids, steps, strict=True):
        if not step.value or not step.active:
            continue
        options = step.options or {}
        column = options["set"].split(" = ", 1)[0]
        subject = f"{column} in the rows of {options['table']} that exist now"
        lines = [
            *_wrap(
                f"TODO: the SQL value of {subject} (e.g. \"'unknown'\" or "
                '"lower(name)"). The module refuses to load until it is set.',
                "# ",
            ),
            f"{step.value}: str | None = None",
            f"if {step.value} is None:",
            "    raise RegistrationError(",
            *_string_lines(
                f"{step_id}: set {step.value} in {where} (the value of {subject}) "
                "before deploying",
                "        ",
            ),
            "    )",
        ]
        yield "\n".join(lines)


def _step(step_id: str, step: GeneratedStep) -> str:
    lines = _wrap(step.comment, "# ") if step.comment else []
    if step.kind is StepKind.TODO:
        lines.extend(_wrap(step.sql, "#     "))
        return "\n".join(lines)
    body = _call(step_id, step)
    if not step.active:
        body = "\n".join(f"# {line}" if line else "#" for line in body.splitlines())
    return "\n".join([*lines, body])


def _call(step_id: str, step: GeneratedStep) -> str:
    if step.kind is StepKind.SQL:
        return f"migrate.sql(\n    {_str(step_id)},\n    {_sql(step.sql)},\n)"
    if step.kind is StepKind.DROP_INDEX:
        function = re.sub(r"\W", "_", step.name)
        return (
            f"@migrate.index({_str(step_id)})\n"
            f"def {function}(m: StepHandle) -> None:\n"
            f"    m.execute({_str(step.sql)})"
        )
    options = dict(step.options or {})
    if step.kind is StepKind.INDEX:
        if not options.get("unique"):
            options.pop("unique", None)
        if options.get("where") is None:
            options.pop("where", None)
    if step.kind is StepKind.BACKFILL and options.get("where") is None:
        options.pop("where", None)
    arguments = [f"    {_str(step_id)},"]
    for key, value in options.items():
        text = _str(value) if isinstance(value, str) else repr(value)
        if isinstance(value, list):
            text = "[" + ", ".join(_str(v) for v in value) + "]"
        if step.value and key == "set":
            text = "f" + _str(value)  # the TODO constant, as an f-string field
        arguments.append(f"    {key}={text},")
    call = "index" if step.kind is StepKind.INDEX else "backfill"
    return f"migrate.{call}(\n" + "\n".join(arguments) + "\n)"


def _str(value: str) -> str:
    """A double-quoted Python string literal (ruff format's quote style)."""
    text = repr(value)
    if text.startswith("'") and '"' not in value:
        text = '"' + text[1:-1].replace("\\'", "'") + '"'
    return text


def _sql(sql: str) -> str:
    """SQL as a triple-quoted block, each line wrapped to fit 88 columns."""
    if '"""' in sql or "\\" in sql or sql.endswith('"'):
        return _str(sql)
    lines = []
    for line in sql.splitlines():
        lines.extend(_wrap_sql(line, _WIDTH - len(_SQL_INDENT)))
    return '"""\n' + "".join(f"{_SQL_INDENT}{line}\n" for line in lines) + '    """'


def _wrap_sql(line: str, width: int) -> list[str]:
    """Break a SQL line at spaces outside quotes and comments."""
    indent = line[: len(line) - len(line.lstrip())]
    if len(line) <= width or line.lstrip().startswith("--"):
        return [line]
    words = _sql_words(line.strip())
    out = [indent + words[0]]
    for word in words[1:]:
        if len(out[-1]) + 1 + len(word) <= width:
            out[-1] += " " + word
        else:
            out.append(indent + "    " + word)
    return out


def _sql_words(text: str) -> list[str]:
    """Split at spaces that are outside '...' and "..." (never inside a literal)."""
    words, current, quote = [], "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == " ":
            if current:
                words.append(current)
            current = ""
            continue
        current += char
    return [*words, current] if current else words


def _string_lines(text: str, indent: str) -> list[str]:
    """A long message as implicitly joined string literals that fit 88 columns."""
    chunks = textwrap.wrap(
        text,
        width=_WIDTH - len(indent) - 3,
        break_long_words=False,
        drop_whitespace=True,
    )
    pieces = [c + " " for c in chunks[:-1]] + chunks[-1:]
    return [f"{indent}{_str(p)}" for p in pieces]


def _wrap(text: str, prefix: str) -> list[str]:
    return textwrap.wrap(
        " ".join(text.split()),
        width=_WIDTH,
        initial_indent=prefix,
        subsequent_indent=prefix,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [prefix.rstrip()]
