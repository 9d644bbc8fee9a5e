import numpy as np

from mmkeras.data.splits import group_split


def test_machine_dataset_splits_are_disjoint_by_machine(tiny_machine):
    machines = {s: set(a["machine_id"]) for s, a in tiny_machine.splits.items()}
    assert set(machines) == {"train", "val", "test"}
    assert not machines["train"] & machines["test"]
    assert not machines["train"] & machines["val"]
    assert not machines["val"] & machines["test"]
    for split, arrays in tiny_machine.splits.items():
        assert len(np.unique(arrays["label"])) == 4, f"{split} misses a class"


def test_group_split_keeps_groups_whole_and_stratifies():
    groups = np.repeat([f"m{i}" for i in range(20)], 5)
    strata = np.repeat(np.arange(20) % 4, 5)
    parts = group_split(groups, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3, strata=strata)
    total = sum(p.astype(int) for p in parts.values())
    assert np.all(total == 1)
    for mask in parts.values():
        for g in np.unique(groups[mask]):
            assert mask[groups == g].all()
        assert set(strata[mask]) == {0, 1, 2, 3}
    assert [int(p.sum()) // 5 for p in parts.values()] == [12, 4, 4]
