"""One factory for ctfp's membership estimators, for callers that hold settings as plain dicts
(the experiment runner's presets).

``options["estimator"]`` names the class (default ``"similarity"``); the other keys are its
parameters. Settings the caller shares (``device``, ``n_jobs``, ``random_state``,
``index_cache``, ``rule``) go only to the estimators that take them.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ESTIMATORS", "make_estimator"]

#: ``options["estimator"]`` -> class (module:name, imported on use).
ESTIMATORS = {
    "similarity": "ctfp.membership.similarity:SimilarityMembership",
    "fused": "ctfp.membership.fused:FusedMembership",
    "ganleaks": "ctfp.membership.baselines:GANLeaks",
    "vcmi": "ctfp.membership.baselines:VCMISSIM",
}

#: Preset keys that are not estimator parameters (read by the runner).
RUNNER_KEYS = ("estimator", "decision")


def make_estimator(options: dict[str, Any], **shared: Any) -> Any:
    """The estimator ``options`` describe, with the ``shared`` settings it takes (others are
    dropped: VCMI's SSIM takes no ``device``, for instance)."""
    kind = options.get("estimator", "similarity")
    if kind not in ESTIMATORS:
        raise ValueError(
            f"estimator: expected one of {', '.join(map(repr, ESTIMATORS))}, found {kind!r}"
        )
    module, name = ESTIMATORS[kind].split(":")
    cls = getattr(importlib.import_module(module), name)
    params = cls().get_params()
    own = {k: v for k, v in options.items() if k not in RUNNER_KEYS}
    unknown = sorted(set(own) - set(params))
    if unknown:
        raise ValueError(f"{name}: unknown settings {', '.join(unknown)}")
    return cls(**{k: v for k, v in shared.items() if k in params}, **own)
