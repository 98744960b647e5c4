"""A pipeline's parameters as one run or one ``instances`` entry gives them: what is wrong
before anything is read (an unknown parameter, a template field that looks misspelt, a
missing one), worded once for ``check``, ``doctor``, ``run`` and ``explain --pipeline``.

Light on purpose: ``pipekey run`` imports it on its start-up path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .policy import template_fields

if TYPE_CHECKING:
    from .manifest import PipelineConfig

__all__ = ["problem"]


def problem(config: PipelineConfig, instance: dict[str, str], number: int | None = None,
            instances_hint: bool = True) -> tuple[str, str] | None:
    """(status, detail) of what keeps one instance (``number`` in the manifest, else --param)
    from being checked: an unknown parameter (the cause, so said first, with a did-you-mean,
    "invalid"), a template parameter that looks like a misspelt one (``{envv}``, "invalid"),
    or a missing one ("skipped", with the ``--param NAME=...`` that gives it). None when the
    instance can be checked."""
    expected = config.parameters()
    for param in sorted(set(instance) - expected):
        where = (f"instance {number} has unknown parameter {param!r}" if number is not None
                 else f"unknown parameter {param!r} in --param")
        return "invalid", f"{where} ({_suggest(param, expected)})"
    uses = _template_uses(config)
    missing = sorted(expected - set(instance))
    for param in missing:
        import difflib  # error messages only

        close = difflib.get_close_matches(param, ({"env"} | expected) - {param}, n=1)
        if close:
            return "invalid", (f"{uses[param]} uses parameter {param!r} (did you mean "
                               f"'{{{close[0]}}}'?)")
    if missing:
        wanted = "; ".join(f"{uses[p]} needs parameter {p!r}" for p in missing)
        passes = " ".join(f"--param {p}=..." for p in missing)
        hint = " or add instances = [...] to the pipeline" if instances_hint else ""
        return "skipped", f"{wanted} (pass {passes}{hint})"
    return None


def _suggest(name: str, known: set[str]) -> str:
    import difflib  # error messages only

    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"its parameters: {', '.join(sorted(known)) or 'none'}"


def _template_uses(config: PipelineConfig) -> dict[str, str]:
    """Parameter -> the first template that uses it, as ``scope 'a/{b}'``."""
    templates = [("scope", config.scope),
                 *((f"connection {c!r} template", t)
                   for c, t in config.stored_connections().items()),
                 *(("grant", g) for g in config.grants)]
    uses: dict[str, str] = {}
    for what, template in templates:
        for field in template_fields(template):
            uses.setdefault(field, f"{what} {template!r}")
    return uses
