"""Group-disjoint splits: every window of one machine, subject or speaker lands in one split.

Example:
    >>> import numpy as np
    >>> groups = np.array(["m0", "m0", "m1", "m2", "m3", "m4"])
    >>> parts = group_split(groups, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    >>> int(sum(p.astype(int) for p in parts.values()).max())  # each example in one split
    1
"""

from __future__ import annotations

import numpy as np


def group_split(
    groups: np.ndarray,
    fractions: dict[str, float],
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Assign whole groups to splits; returns one boolean mask per split over the examples.

    Groups are shuffled with ``seed`` and dealt out so each split gets ``round(fraction * n)``
    groups (the last split named takes the rest). With ``strata`` (one value per example, e.g. the
    label of a machine's first run), groups are dealt per stratum so every split sees every
    stratum when there are enough groups.
    """
    groups = np.asarray(groups)
    if not fractions or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative, got {fractions}")
    total = sum(fractions.values())
    names = list(fractions)
    unique, first = np.unique(groups, return_index=True)
    group_strata = np.asarray(strata)[first] if strata is not None else np.zeros(len(unique))
    rng = np.random.default_rng(seed)
    assigned: dict[str, list] = {name: [] for name in names}
    for stratum in np.unique(group_strata):
        members = rng.permutation(unique[group_strata == stratum])
        start = 0
        for i, name in enumerate(names):
            take = len(members) - start if i == len(names) - 1 else round(
                fractions[name] / total * len(members)
            )
            assigned[name].extend(members[start:start + take])
            start += take
    return {name: np.isin(groups, assigned[name]) for name in names}
