"""Exception types whose message is what the user reads.

The CLI is the only place that turns these into exit codes:
``UserError`` -> 2, ``VerificationFailed`` -> 1, anything else -> internal error.
"""
from __future__ import annotations


class ConvertError(Exception):
    """Base of every error the toolkit raises on purpose."""


class UserError(ConvertError):
    """A mistake in a recipe, a model file or a data file: exit code 2."""


class RecipeError(UserError):
    """A recipe key is unknown, mistyped or impossible."""

    def __init__(self, key: str, message: str, line: int | None = None, source: str | None = None):
        self.key = key
        self.line = line
        self.source = source
        self.message = message
        where = key or "<recipe>"
        if line is not None:
            where += f" (line {line}" + (f" of {source}" if source else "") + ")"
        elif source == "--set":
            where += " (from --set)"
        super().__init__(f"{where}: {message}")


class RecipeErrors(RecipeError):
    """Every problem found in one recipe. ``str()`` is one line per problem: first the recipe's, in line
    order, then those of --set. ``errors`` holds them as RecipeError; key, line, source and message are the
    first one's, so code that handles a single RecipeError keeps working."""

    def __init__(self, errors: list[RecipeError]):
        if not errors:
            raise ValueError("RecipeErrors needs at least one error")
        unique: dict[str, RecipeError] = {}
        for error in errors:
            unique.setdefault(str(error), error)
        self.errors = sorted(unique.values(), key=lambda e: (e.source == "--set", e.line or 0))
        first = self.errors[0]
        super().__init__(first.key, first.message, first.line, first.source)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return self.args[0]


class ModelError(UserError):
    """The model file is missing, unreadable or not loadable as declared."""


class DataError(UserError):
    """A dataset is missing, empty, unreadable or has the wrong shape."""


class DependencyError(UserError):
    """An optional runtime or tool is not installed; the message says how to install it."""


class ConversionError(ConvertError):
    """A converter refused the model (unsupported op, for example). Reported per artifact."""


class RunLocked(UserError):
    """Another `convert run` holds the output folder."""


# -- browser backends (branch `browser`): a backend this machine cannot offer ------------------------
class BackendUnavailable(ConversionError):
    """A backend cannot run here at all (no Chromium, no WebGPU adapter): the row is skipped, not failed.

    The message says why and, where one exists, the one command that installs what is missing.
    """
