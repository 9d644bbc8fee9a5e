"""Bad records: skipped and reported, never dropped silently.

Readers call :meth:`Quarantine.add` for every record they cannot use, naming the record (file,
row) and the problem. With ``strict=True`` the first bad record raises :class:`BadRecordError`
instead. A training run prints :meth:`Quarantine.summary` and saves :meth:`Quarantine.write`.

Example:
    >>> q = Quarantine()
    >>> q.add("fsdd/0_theo_1.wav", "truncated WAV: header says 6000 bytes, file has 4000")
    >>> len(q), q.counts()
    (1, {'truncated WAV': 1})
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field

from mmkeras.data import fs


class DataError(ValueError):
    """The data cannot make a dataset; the one-line message names the file or folder."""


class BadRecordError(DataError):
    """A record that cannot be used; the message names it and the problem."""


class EmptyDataError(DataError):
    """A dataset or one of its splits has no examples; the message names folder and split."""


def check_not_empty(
    splits: dict[str, dict], folder: str | os.PathLike, quarantine: Quarantine | None = None
) -> None:
    """Raise :class:`EmptyDataError` naming ``folder`` and the first split without examples."""
    skipped = f"; {len(quarantine)} bad record(s) were skipped" if quarantine else ""
    if not any(len(arrays.get("label", ())) for arrays in splits.values()):
        raise EmptyDataError(f"{folder}: no usable examples in any split{skipped}: check the "
                             "folder (and the quarantine report)")
    for name, arrays in splits.items():
        if not len(arrays.get("label", ())):
            raise EmptyDataError(f"{folder}: split {name!r} has no examples{skipped}: check the "
                                 "folder, the split arguments (and the quarantine report)")


@dataclass
class Quarantine:
    """Collects ``(record, reason)`` pairs; ``strict`` turns the first one into an error."""

    strict: bool = False
    records: list[tuple[str, str]] = field(default_factory=list)

    def add(self, record: str | os.PathLike, reason: str) -> None:
        """Report a bad record; raises :class:`BadRecordError` when ``strict``."""
        if self.strict:
            raise BadRecordError(f"{record}: {reason} (strict mode stops at the first bad record)")
        self.records.append((str(record), reason))

    def extend(self, other: Quarantine) -> None:
        self.records.extend(other.records)

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, int]:
        """Number of records per kind of problem (the reason up to its first colon)."""
        return dict(Counter(reason.split(":")[0] for _, reason in self.records))

    def summary(self, limit: int = 5) -> str:
        """A few lines for the console: total, counts per problem, the first records."""
        if not self.records:
            return "quarantine: no bad records"
        lines = [f"quarantine: {len(self)} bad record(s) skipped"]
        lines += [f"  {n:>5} x {kind}" for kind, n in sorted(self.counts().items())]
        lines += [f"  {record}: {reason}" for record, reason in self.records[:limit]]
        if len(self) > limit:
            lines.append(f"  ... {len(self) - limit} more in the report")
        return "\n".join(lines)

    def write(self, path: str | os.PathLike) -> None:
        """CSV report with one row per bad record: ``record,reason`` (a path or a URL)."""
        with fs.open_file(path, "w") as f:
            writer = csv.writer(f)
            writer.writerow(["record", "reason"])
            writer.writerows(self.records)
