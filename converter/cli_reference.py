"""Render docs/cli-reference.md from the CLI and the Python API themselves, so the reference cannot drift."""
from __future__ import annotations

import inspect
from typing import Any

API_FUNCTIONS = ("validate", "plan", "run", "sweep", "load")


def _commands(group: Any, prefix: str) -> list[tuple[str, Any]]:
    found = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if hasattr(command, "commands"):  # a group of commands
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


def _type_name(param: Any) -> str:
    """'path', 'int', 'text', ... from the option's annotation (Optional and List unwrapped)."""
    import typing

    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    while typing.get_origin(annotation) in (typing.Union, list, typing.List):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    name = getattr(annotation, "__name__", str(annotation)).lower()
    return {"str": "text", "posixpath": "path"}.get(name, name) + (" (repeatable)" if getattr(param, "multiple", False) else "")


def _option_row(param: Any) -> str:
    names = ", ".join(f"`{n}`" for n in (*param.opts, *param.secondary_opts))
    kind = "flag" if getattr(param, "is_flag", False) else _type_name(param)
    default = param.default
    shown = "–" if default in (None, False, (), []) or callable(default) else f"`{default}`"
    envvar = f" (env `{param.envvar}`)" if getattr(param, "envvar", None) else ""
    help_text = (getattr(param, "help", "") or "").replace("|", "\\|").replace("\n", " ")
    return f"| {names} | {kind} | {shown} | {help_text}{envvar} |"


def _signature(function: Any) -> str:
    """The signature as written (defaults that are functions shown by name, not by address)."""
    parameters = []
    for parameter in inspect.signature(function).parameters.values():
        if callable(parameter.default) and parameter.default is not inspect.Parameter.empty:
            parameter = parameter.replace(default=_Shown("a no-op"))
        parameters.append(parameter)
    return str(inspect.signature(function).replace(parameters=parameters)).replace("'", "")


class _Shown:
    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def render() -> str:
    import typer

    from converter import api
    from converter.cli import app

    root = typer.main.get_command(app)
    lines = ["# CLI and Python API reference", "",
             "Generated from `converter/cli.py` and `converter/api.py` by `make docs` (`convert cli-docs`); a test "
             "fails when it is stale. Exit codes: 0 every artifact passed, 1 a budget failed, 2 a user error (one "
             "`error:` line per problem), 3 an internal error (a bug).", "", "## Commands", ""]
    for name, command in _commands(root, "convert"):
        lines += [f"### `{name}`", "", inspect.cleandoc(command.help or "").split("\n\n")[0].replace("\n", " "), ""]
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
        usage = " ".join([name] + [p.name.upper() for p in arguments] + (["[OPTIONS]"] if options else []))
        lines += ["```", usage, "```", ""]
        if options:
            lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
            lines += [_option_row(p) for p in options]
            lines.append("")
    lines += ["## Python API", "", "`from converter import api`", ""]
    for name in API_FUNCTIONS:
        function = getattr(api, name)
        signature = _signature(function)
        lines += [f"### `api.{name}{signature}`", "", inspect.cleandoc(function.__doc__ or ""), ""]
    lines += ["### `api.Report`", "", inspect.cleandoc(api.Report.__doc__ or ""),
              "`report.data` is report.json (docs/report-format.md); `report.passed`, `report.artifacts`, "
              "`report.artifact(name)` and `report.out_dir` are shortcuts.", ""]
    return "\n".join(lines)
