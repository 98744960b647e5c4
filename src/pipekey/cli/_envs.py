"""Where a mistyped ``--env`` would go unrefused (used by ``doctor`` and error hints)."""

from __future__ import annotations

import glob
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..client import Pipekey

__all__ = ["env_without_store"]


def env_without_store(lk: Pipekey, origin: str = "--env") -> tuple[str, str] | None:
    """Where a mistyped ``--env`` would go unrefused: the manifest lists no ``environments``,
    a local store's path has ``{env}``, and the chosen environment has no store there while
    others have. Then (the backend, "environment 'prdo' (from --env) has no store yet
    (environments with stores: dev, prod)"); else None."""
    from ..backends.base import BuildContext
    from ..backends.local import LocalConfig

    manifest = lk.manifest
    if manifest is None or manifest.environments or not manifest.env_explicit:
        return None
    for name in manifest.chain:
        config = manifest.backends[name]
        if not isinstance(config, LocalConfig) or "{env}" not in config.path:
            continue
        if manifest.context().path(config.path).exists():
            return None
        mark = "pipekey-env-mark"  # a valid environment name no store path holds
        template = str(BuildContext(manifest.base_dir, mark).path(config.path))
        shape = re.compile("([^/]+)".join(map(re.escape, template.split(mark))))
        found = sorted({m.group(1) for p in glob.glob(template.replace(mark, "*"))
                        if (m := shape.fullmatch(p)) and len(set(m.groups())) == 1})
        if found:
            return name, (f"environment {manifest.env!r} (from {origin}) has no store yet "
                          f"(environments with stores: {', '.join(found)})")
    return None
