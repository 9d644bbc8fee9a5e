"""MobiFall v2.0 (subjects 2, 3, 4): phone accelerometer, gyroscope and orientation -> windows.

Source: GitHub ``yehowlong/MobiAct_Dataset_v2.0-MobiFall_Dataset_v2.0`` at commit
:data:`COMMIT` (despite its name the content is MobiFall v2.0, BMI Lab, TEI of Crete; no
licence file: research use, cite Vavoulas et al.). The subset used here is every ADL except
STD/WAL and every fall of subjects 2, 3 and 4: 144 trials, 432 files. Local copy:
``$MMKERAS_DATA_DIR/sensors/mobifall_v2``; without one, :func:`download` fetches the archive and
keeps the subset after checking its :func:`~mmkeras.data.download.folder_digest`.

File format
-----------
``sub<S>/{ADL,FALLS}/<CODE>/<CODE>_<sensor>_<S>_<trial>.txt`` with sensor ``acc`` (m/s^2 with
gravity), ``gyro`` (rad/s) or ``ori`` (azimuth, pitch, roll in degrees); the three files of a
trial were recorded together. Each file (ASCII, CRLF) has ``#`` header lines (``#Key: value``
entries such as ``#Activity: 12 - BSC - Back sitting chair - 10s`` and ``#Subject ID: 2``),
blank lines, the line ``@DATA``, then rows ``timestamp_ns, x, y, z``. Timestamps are integer
nanoseconds of Android's monotonic sensor clock, shared by the three files of a trial.

Measured timing (all 144 trials): acc is irregular, median step 10.5 ms (~87 Hz); 110 files
start with a warm-up of 1-8 steps of ~200 ms (5 Hz, up to 1.7 s) and one has a 1.1 s dropout
mid-trial; every other acc step is <= 40 ms but one of 56 ms. gyro and ori run at 200 Hz
(median step 5.0 ms, 94.5 % within 4.5-5.5 ms, 27 steps > 10 ms, the longest a 0.95 s
dropout in BSC_*_3_2). Every ori timestamp is a gyro timestamp; acc never coincides with gyro.

Alignment (:func:`load_trial`)
------------------------------
The three streams go onto one fixed-rate int64-ns grid (``fixed_rate_grid``, ``rate_hz`` = 200
by default, the gyro rate) over the trial's common time span ``[max of first timestamps, min of
last timestamps]``, with :func:`~mmkeras.data.align.align` on the raw nanosecond timestamps (no
clock offset: one clock):

* ``acc``: ``linear`` with ``tolerance`` = :data:`ACC_MAX_GAP_NS` (50 ms). acc is slower than
  the grid, so it must be interpolated; 50 ms bridges the jitter and a few lost samples
  (every ordinary step but one is <= 40 ms) and is a quarter of the 200 ms warm-up spacing, so
  the warm-up and the real dropouts (every gap > 100 ms) are left missing.
* ``gyro`` and ``ori``: ``nearest`` with ``tolerance`` = :data:`NEAREST_TOLERANCE_NS` (5 ms,
  one sensor period). They already run at the grid rate, so the nearest sample (at most 2.5 ms
  away while the sensor keeps its rate) keeps raw values, sharp impacts included, and never
  makes up orientation angles; one lost sample is bridged by its neighbour, longer dropouts
  (> 10 ms) are missing. A grid slower than 200 Hz decimates them without low-pass filtering.

Orientation angles are encoded before aligning as ``ori`` = ``[sin az, cos az, sin pitch,
sin roll]``: azimuth is circular (it wraps 360 -> 0 and a few files even run below 0 to -38),
so sin/cos makes it continuous. Pitch jumps between ``p`` and ``-180 - p`` (13 times in this
subset, within 5 ms while azimuth and roll move smoothly: a branch artefact of Android's
legacy orientation sensor); ``sin(pitch)`` is identical on both branches. Roll stays within
[-90, 90], where ``sin`` is monotonic. Channels are listed in :data:`CHANNELS`.

Duplicate timestamps are kept and merged by ``align``'s ``duplicates="mean"`` policy;
rows with NaN/inf are dropped by ``align`` (missing samples). Both are still reported.

Windows and labels (:func:`load`)
---------------------------------
Each trial's aligned streams are cut into windows of ``window_s`` every ``hop_s``. A window is
dropped when any stream is present on fewer than ``min_presence`` of its steps; the drops are
counted in ``info["windows"]`` and listed in ``info["dropped_windows"]`` (they are a property
of the recording, not bad records, so they do not go into the quarantine). Remaining gaps are
filled per trial with :func:`~mmkeras.data.impute.impute` (``linear``); per-window presence
(``<stream>_presence`` fraction and ``<stream>_mask`` [W, T] bool) stays in the split's
metadata next to ``subject``, ``trial``, ``file`` (the trial's files as a glob pattern) and
``start_s``.

Labels are the 11 codes of :data:`CLASSES` (sorted): ADLs CSI, CSO, JOG, JUM, SCH, STN, STU
and falls BSC, FKL, FOL, SDL (:data:`ACTIVITIES`). The label is per trial: this version has no
fall-onset annotation, so a fall trial's windows before and after the fall carry the fall's
code too. Splits are by subject, so no subject is in two splits: ``test_subject`` (default 4),
``val_subject`` (default 3) and train = every other subject (2).

Full copy and leave-one-subject-out
-----------------------------------
``full=True`` reads ``$MMKERAS_DATA_DIR/sensors/mobifall_v2_full`` (:data:`FULL_SUBDIR`): all 24
subjects, 612 trials; only 9 subjects (2, 3, 4, 5, 7, 8, 9, 10, 11) recorded the ADLs, the
other 15 only the 4 falls. Subject 21's SDL files sit in ``FOL/``: the label comes from the file
name (and the header must agree), never from the folder. ``fold=k`` is leave-one-subject-out
over the subjects with ADLs (sorted, :func:`loso_subjects`): the test subject is the k-th, the
validation subjects are the ``val_subjects`` next ones in that order (cyclically, so each
subject validates once with ``val_subjects=1``), and every other subject trains, the 15
falls-only subjects always. Parsed and aligned trials are kept in memory per folder (keyed by
every file's size and mtime), so the folds of one process parse the files once (612 trials:
about 12 s on a busy 2-core machine).

Options for subject independence
--------------------------------
All off by default (the numbers above are without them); each is a :func:`load` argument, so a
config sets it as ``dataset_args.<name>``.

* ``ori_channels``: the ``ori`` channels kept, a subset of :data:`CHANNELS` (e.g.
  ``[pitch_sin, roll_sin]``: without the azimuth, the compass heading, which depends on the room
  and the way the subject faced rather than on the activity).
* ``magnitude``: ``acc`` and ``gyro`` get a 4th channel ``norm``, their Euclidean norm per step,
  which does not depend on how the phone sits in the pocket.
* ``fall_margin_s`` (fall-centred windows, a labelling rule): a fall trial keeps only the windows
  that hold the trial's impact, its peak of ``|acc|`` over real samples, at least
  ``fall_margin_s`` inside both edges; its other windows (standing before, lying after, which
  carry the fall's code without showing a fall) are left out, counted in
  ``info["windows"]["dropped_off_impact"]`` and listed in ``info["off_impact_windows"]``. The
  rule uses only the window's own trial, never its label beyond fall / ADL, and applies to
  train, validation and test alike; results with it are on these windows. In the 24-subject copy
  the peak lies 1.3-3.6 s into the trial (median 2.2 s); with 4 s windows every 1 s,
  ``fall_margin_s=0.5`` keeps 1-3 windows of 287 of the 288 fall trials (1.0 would leave 33
  trials without a window).
* ``rotate_copies`` (training augmentation): each training trial is added ``rotate_copies`` more
  times with acc and gyro turned by one rotation (uniformly random axis, angle uniform in
  [0, ``rotate_deg``], seeded by the trial and the copy, so every fold and run sees the same
  copies), as if the phone sat differently in the pocket; ``ori`` keeps the recorded angles.
  Metadata ``copy`` is 0 for the recorded windows; validation and test are never augmented.

Quality checks
--------------
Every file problem is reported through :class:`~mmkeras.data.quarantine.Quarantine` as
``(file[:line], reason)``; ``strict=True`` raises :class:`BadRecordError` at the first one.
Parse errors (no ``@DATA``, wrong number of fields, unparsable number), empty files,
timestamps that go backwards (such a clock cannot be trusted, so the rows are not re-sorted),
unknown codes, file names or headers that disagree with the file name, a missing
sensor file and streams without a common span make the whole trial skipped; duplicate
timestamps and NaN/inf rows or rows with a value beyond :data:`MAX_ABS_VALUE` (absurd: 1e300
becomes inf in float32) are reported and the trial is kept as described above (such rows are
missing samples). A folder without trials or a split without windows raises
:class:`~mmkeras.data.quarantine.EmptyDataError` naming the folder and the split.

Example:
    >>> ds = load(window_s=2.0, hop_s=1.0)                      # doctest: +SKIP
    >>> ds.splits["train"]["acc"].shape                         # doctest: +SKIP
    (..., 400, 3)
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmkeras.data import download as dl
from mmkeras.data.align import align, fixed_rate_grid
from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
from mmkeras.data.download import cache_root, folder_digest, local_data
from mmkeras.data.impute import impute
from mmkeras.data.quarantine import BadRecordError, EmptyDataError, Quarantine, check_not_empty
from mmkeras.data.windowing import sliding_windows, window_starts

ACTIVITIES: dict[str, str] = {
    "BSC": "fall: back-sitting-chair",
    "CSI": "car step-in",
    "CSO": "car step-out",
    "FKL": "fall: front-knees-lying",
    "FOL": "fall: forward-lying",
    "JOG": "jogging",
    "JUM": "jumping",
    "SCH": "sit chair",
    "SDL": "fall: sideward-lying",
    "STN": "stairs down",
    "STU": "stairs up",
}
CLASSES: tuple[str, ...] = tuple(sorted(ACTIVITIES))
SENSORS: tuple[str, ...] = ("acc", "gyro", "ori")
CHANNELS: dict[str, tuple[str, ...]] = {
    "acc": ("x", "y", "z"),
    "gyro": ("x", "y", "z"),
    "ori": ("azimuth_sin", "azimuth_cos", "pitch_sin", "roll_sin"),
}
ACC_MAX_GAP_NS = 50_000_000
NEAREST_TOLERANCE_NS = 5_000_000

REPO = "yehowlong/MobiAct_Dataset_v2.0-MobiFall_Dataset_v2.0"
COMMIT = "673f41a27b85cd37afbce2b054d1a5a731cd831c"
ARCHIVE_URL = f"https://github.com/{REPO}/archive/{COMMIT}.zip"
SUBDIR = "sensors/mobifall_v2"
FULL_SUBDIR = "sensors/mobifall_v2_full"
ADLS: frozenset[str] = frozenset({"CSI", "CSO", "JOG", "JUM", "SCH", "STN", "STU"})
DATA_PATTERN = "*_*_*_*.txt"
SUBSET_DIGEST = "3f3febf57df789e5a5002b70542e6c470130053374f36723f0783d7a02bed103"
"""``folder_digest(root, DATA_PATTERN)`` of the 432 subset files (computed on the local copy)."""
_SUBSET_MEMBER = re.compile(
    r"^[^/]+/(sub[234]/(?:ADL/(?:CSI|CSO|JOG|JUM|SCH|STN|STU)|FALLS/(?:BSC|FKL|FOL|SDL))"
    r"/[^/]+\.txt)$"
)
_FILE_NAME = re.compile(r"^(?P<code>[A-Za-z]+)_(?P<sensor>acc|gyro|ori)_(?P<subject>\d+)_"
                        r"(?P<trial>\d+)\.txt$")
_ROW_DTYPE = np.dtype([("t", "<i8"), ("x", "<f8"), ("y", "<f8"), ("z", "<f8")])
_MARKER = ".verified"
# No phone sensor here reads beyond this (m/s^2, rad/s, degrees; the data peak at 360):
# larger values (1e300 is inf in float32) are faults, treated like NaN/inf.
MAX_ABS_VALUE = 1e6


class SensorFileError(BadRecordError):
    """A sensor file that cannot be parsed: its ``path``, ``line`` (1-based or None), ``reason``."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


@dataclass(frozen=True)
class TrialFiles:
    """The three files of one trial; ``file`` names them as a pattern relative to the root."""

    code: str
    subject: int
    trial: int
    paths: dict[str, Path]
    file: str

    @property
    def name(self) -> str:
        return f"{self.code}_{self.subject}_{self.trial}"


@dataclass
class AlignedTrial:
    """One trial on its grid ``t_ns`` [M]: ``values[s]`` float64 [M, C] (NaN where missing)
    and ``mask[s]`` bool [M] (True = a real sample was close enough) per sensor ``s``."""

    files: TrialFiles
    t_ns: np.ndarray
    values: dict[str, np.ndarray]
    mask: dict[str, np.ndarray]

    @property
    def label(self) -> int:
        return CLASSES.index(self.files.code)


def read_sensor_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Parse one MobiFall file into ``(t_ns int64 [N], values float64 [N, 3], header)``.

    ``header`` holds the ``#Key: value`` entries (str), ``"comments"`` (the other ``#`` lines)
    and ``"data_line"`` (1-based line number of the first data row; rows follow line by line).
    NaN/inf values are parsed as such (see :func:`stream_problems`). Raises
    :class:`SensorFileError` naming the file and line for an empty file, a missing ``@DATA``
    line, a row without exactly 4 fields or a field that is not a number (the timestamp must
    be an integer).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SensorFileError(path, None, f"not a text file: {err}") from err
    if not text.strip():
        raise SensorFileError(path, None, "empty file: no header and no data")
    lines = text.splitlines()
    header: dict[str, Any] = {"comments": []}
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line == "@DATA":
            break
        if not line or set(line) == {"#"}:
            continue
        if not line.startswith("#"):
            raise SensorFileError(
                path, i + 1, f"missing @DATA: expected '#' header lines, then '@DATA', before "
                f"the data rows; found {line[:40]!r}"
            )
        key, sep, value = line[1:].partition(": ")
        if sep:
            header[key.strip()] = value.strip()
        else:
            header["comments"].append(line[1:].strip())
    else:
        raise SensorFileError(path, None, "missing @DATA: no '@DATA' line after the header")
    header["data_line"] = i + 2
    rows = lines[i + 1:]
    while rows and not rows[-1].strip():
        rows.pop()
    if not rows:
        return np.empty(0, np.int64), np.empty((0, 3)), header
    try:
        table = np.loadtxt(rows, delimiter=",", dtype=_ROW_DTYPE, comments=None, ndmin=1)
    except ValueError as err:
        _raise_row_error(path, rows, header["data_line"])
        raise SensorFileError(path, None, f"unparsable data: {err}") from err
    if table.size != len(rows):  # loadtxt skips blank lines; rows must map to lines 1:1
        _raise_row_error(path, rows, header["data_line"])
    values = np.stack([table["x"], table["y"], table["z"]], axis=1)
    return table["t"], values, header


def _raise_row_error(path: Path, rows: list[str], first_line: int) -> None:
    """Find the first bad data row (error path only) and raise for it."""
    names = ("timestamp_ns", "x", "y", "z")
    for k, row in enumerate(rows):
        line = first_line + k
        fields = row.split(",") if row.strip() else []
        if len(fields) != 4:
            raise SensorFileError(
                path, line, f"bad field count: {len(fields)} fields, expected 4 "
                f"(timestamp_ns, x, y, z); line is {row.strip()[:40]!r}"
            )
        for name, field in zip(names, fields, strict=True):
            try:
                int(field) if name == "timestamp_ns" else float(field)
            except ValueError:
                what = "an integer" if name == "timestamp_ns" else "a number"
                raise SensorFileError(
                    path, line, f"unparsable number: {name} {field.strip()[:20]!r} is not {what}"
                ) from None


def stream_problems(
    t_ns: np.ndarray, values: np.ndarray, first_line: int
) -> list[tuple[str, bool]]:
    """Quality problems of one parsed stream as ``(reason, fatal)``; ``fatal`` skips the trial.

    Checks: no rows (fatal), timestamps going backwards (fatal), duplicate timestamps (kept,
    merged by their mean), rows with NaN/inf (kept, treated as missing samples). Reasons give
    counts and the first offending line (``first_line`` = line of row 0). Rows with a value
    beyond :data:`MAX_ABS_VALUE` (absurd values) are kept as missing samples like NaN/inf.
    """
    if t_ns.size == 0:
        return [("empty file: no data rows after @DATA", True)]
    problems = []
    step = np.diff(t_ns)
    back = np.flatnonzero(step < 0)
    if back.size:
        k = int(back[0]) + 1
        problems.append((
            f"non-monotonic timestamps: {back.size} backward step(s), first at line "
            f"{first_line + k} ({t_ns[k]} after {t_ns[k - 1]}); trial skipped", True
        ))
    dup = np.flatnonzero(step == 0)
    if dup.size:
        problems.append((
            f"duplicate timestamps: {dup.size} row(s) repeat the previous timestamp, first at "
            f"line {first_line + int(dup[0]) + 1}; kept, merged by their mean", False
        ))
    finite = np.isfinite(values)
    bad = np.flatnonzero(~finite.all(axis=1))
    if bad.size:
        problems.append((
            f"non-finite values: {bad.size} row(s) with NaN/inf, first at line "
            f"{first_line + int(bad[0])}; dropped, treated as missing samples", False
        ))
    with np.errstate(invalid="ignore"):
        huge = np.flatnonzero((finite & (np.abs(values) > MAX_ABS_VALUE)).any(axis=1))
    if huge.size:
        k = int(huge[0])
        problems.append((
            f"absurd values: {huge.size} row(s) with |value| > {MAX_ABS_VALUE:g}, first at "
            f"line {first_line + k} ({np.abs(values[k]).max():g}); dropped, treated as "
            "missing samples", False
        ))
    return problems


def encode_orientation(degrees: np.ndarray) -> np.ndarray:
    """``[N, 3]`` azimuth, pitch, roll (deg) -> ``[N, 4]`` sin az, cos az, sin pitch, sin roll."""
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    with np.errstate(invalid="ignore"):  # inf -> NaN, a missing sample like NaN itself
        return np.stack(
            [np.sin(rad[:, 0]), np.cos(rad[:, 0]), np.sin(rad[:, 1]), np.sin(rad[:, 2])], axis=1
        )


def find_trials(root: str | Path, quarantine: Quarantine | None = None) -> list[TrialFiles]:
    """Complete trials under ``root`` (``sub*/**/<CODE>_<sensor>_<S>_<trial>.txt``), sorted.

    Files with an unrecognised name or a code outside :data:`CLASSES`, and trials missing a
    sensor file, are reported to ``quarantine`` (default: strict, i.e. raise) and left out.
    """
    root = Path(root)
    q = Quarantine(strict=True) if quarantine is None else quarantine
    groups: dict[tuple[str, int, int], dict[str, Path]] = {}
    for path in sorted(root.glob("sub*/**/*.txt")):
        rel = path.relative_to(root).as_posix()
        m = _FILE_NAME.match(path.name)
        if m is None:
            q.add(rel, "unrecognised file name: expected <CODE>_<acc|gyro|ori>_<subject>_"
                       "<trial>.txt")
            continue
        if m["code"] not in ACTIVITIES:
            q.add(rel, f"unknown activity code: {m['code']!r} is not one of the 11 labels "
                       f"{', '.join(CLASSES)}")
            continue
        key = (m["code"], int(m["subject"]), int(m["trial"]))
        files = groups.setdefault(key, {})
        if m["sensor"] in files:
            q.add(rel, f"duplicate file: {files[m['sensor']].relative_to(root).as_posix()} "
                       "is the same trial and sensor; this one is ignored")
            continue
        files[m["sensor"]] = path
    trials = []
    for (code, subject, trial), files in sorted(groups.items()):
        any_path = next(iter(files.values()))
        folder = any_path.parent.relative_to(root).as_posix()
        missing = [s for s in SENSORS if s not in files]
        if missing:
            for sensor in missing:
                q.add(f"{folder}/{code}_{sensor}_{subject}_{trial}.txt",
                      f"missing file: trial {code}_{subject}_{trial} has no {sensor} file; "
                      "trial skipped")
            continue
        pattern = f"{folder}/{code}_*_{subject}_{trial}.txt"
        trials.append(TrialFiles(code, subject, trial, dict(files), pattern))
    return trials


def load_trial(
    trial: TrialFiles,
    rate_hz: float = 200.0,
    quarantine: Quarantine | None = None,
    root: str | Path | None = None,
) -> AlignedTrial | None:
    """Read, check and align one trial onto a ``rate_hz`` grid (see the module docstring).

    Problems go to ``quarantine`` (default: strict, so any problem raises
    :class:`BadRecordError`), recorded relative to ``root`` when given. Returns None when a
    problem made the trial unusable.
    """
    q = Quarantine(strict=True) if quarantine is None else quarantine
    base = Path(root) if root is not None else None

    def record(path: Path) -> str:
        return path.relative_to(base).as_posix() if base is not None else str(path)

    streams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    usable = True
    for sensor in SENSORS:
        path = trial.paths[sensor]
        try:
            t_ns, values, header = read_sensor_file(path)
        except SensorFileError as err:
            where = f"{record(path)}:{err.line}" if err.line else record(path)
            q.add(where, f"{err.reason}; trial skipped")
            usable = False
            continue
        for reason, fatal in _header_problems(header, trial):
            q.add(record(path), reason)
            usable &= not fatal
        for reason, fatal in stream_problems(t_ns, values, header["data_line"]):
            q.add(record(path), reason)
            usable &= not fatal
        with np.errstate(invalid="ignore"):
            values = np.where(np.abs(values) > MAX_ABS_VALUE, np.nan, values)  # -> missing
        streams[sensor] = (t_ns, encode_orientation(values) if sensor == "ori" else values)
    if not usable:
        return None
    start = max(int(t.min()) for t, _ in streams.values())
    stop = min(int(t.max()) for t, _ in streams.values())
    if stop <= start:
        q.add(trial.file, f"no common time span: the three streams do not overlap "
                          f"(start {start} ns >= end {stop} ns); trial skipped")
        return None
    grid = fixed_rate_grid(start, stop + 1, rate_hz)
    methods = {"acc": ("linear", ACC_MAX_GAP_NS), "gyro": ("nearest", NEAREST_TOLERANCE_NS),
               "ori": ("nearest", NEAREST_TOLERANCE_NS)}
    values, mask = {}, {}
    for sensor, (t_ns, x) in streams.items():
        method, tolerance = methods[sensor]
        aligned = align(t_ns, x, grid, method, tolerance=tolerance, duplicates="mean")
        values[sensor], mask[sensor] = aligned.values, aligned.mask
    return AlignedTrial(trial, grid, values, mask)


def _header_problems(header: Mapping[str, Any], trial: TrialFiles) -> list[tuple[str, bool]]:
    """Header entries that contradict the file name (fatal: the label would be ambiguous)."""
    problems = []
    activity = str(header.get("Activity", "")).split(" - ")
    if len(activity) > 1 and activity[1].strip() != trial.code:
        problems.append((f"header mismatch: #Activity says {activity[1].strip()!r}, the file "
                         f"name says {trial.code!r}; trial skipped", True))
    subject = str(header.get("Subject ID", "")).strip()
    if subject and subject != str(trial.subject):
        problems.append((f"header mismatch: #Subject ID says {subject}, the file name says "
                         f"{trial.subject}; trial skipped", True))
    return problems


def data_root(download_missing: bool = True, full: bool = False) -> Path:
    """``$MMKERAS_DATA_DIR/sensors/mobifall_v2``, else a verified cached download.

    ``full=True``: ``$MMKERAS_DATA_DIR/sensors/mobifall_v2_full`` (24 subjects; no download).
    """
    if full:
        local = local_data(FULL_SUBDIR)
        if local is None:
            raise FileNotFoundError(
                f"MobiFall full copy not found: set MMKERAS_DATA_DIR to a folder holding "
                f"{FULL_SUBDIR}/ (all 24 subjects of the upstream archive), or use full=false "
                "for the 3-subject subset")
        return local
    local = local_data(SUBDIR)
    if local is not None:
        return local
    cached = cache_root() / "mobifall_v2"
    if (cached / _MARKER).is_file():
        return cached
    if not download_missing:
        raise FileNotFoundError(
            f"MobiFall not found: set MMKERAS_DATA_DIR to a folder holding {SUBDIR}/, or allow "
            f"the download into {cached}"
        )
    return download(cached)


def download(dest: str | Path, url: str = ARCHIVE_URL, digest: str = SUBSET_DIGEST) -> Path:
    """Download the upstream archive, keep the subset in ``dest`` and verify its digest.

    GitHub does not promise byte-stable archives, so the *content* is verified instead of the
    zip: :func:`~mmkeras.data.download.folder_digest` of the extracted subset must equal
    ``digest``. The subset is built in a temporary folder and renamed into place once verified.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".mobifall-") as tmp:
        archive, subset = Path(tmp) / "archive.zip", Path(tmp) / "mobifall_v2"
        dl.download(url, archive)
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                m = _SUBSET_MEMBER.match(member)
                if m:
                    target = subset / m[1]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
        actual = folder_digest(subset, DATA_PATTERN)
        if actual != digest:
            raise ValueError(
                f"MobiFall subset from {url} has folder digest {actual}, expected {digest}: the "
                "upstream content changed or the download was corrupted. Retry, or place a "
                f"verified copy in $MMKERAS_DATA_DIR/{SUBDIR}."
            )
        (subset / _MARKER).write_text(f"{url}\n{digest}\n")
        if dest.exists():
            shutil.rmtree(dest)
        subset.rename(dest)
    return dest


def loso_subjects(trials: list[TrialFiles]) -> list[int]:
    """Sorted subjects with at least one ADL trial: the test subjects of ``fold=0, 1, ...``.

    Example:
        >>> loso_subjects(find_trials(data_root(full=True)))     # doctest: +SKIP
        [2, 3, 4, 5, 7, 8, 9, 10, 11]
    """
    return sorted({t.subject for t in trials if t.code in ADLS})


def fold_subjects(subjects: list[int], activity: list[int], fold: int,
                  val_subjects: int = 1) -> dict[str, list[int]]:
    """Subjects of each split for leave-one-subject-out fold ``fold`` (see the module docstring).

    Example:
        >>> fold_subjects([1, 2, 3, 4, 6], [2, 3, 4], fold=2)
        {'train': [1, 3, 6], 'val': [2], 'test': [4]}
    """
    n = len(activity)
    if not 0 <= fold < n:
        raise ValueError(f"fold must be in 0..{n - 1} (one per subject with ADLs: {activity}), "
                         f"got {fold}")
    if not 1 <= val_subjects < n:
        raise ValueError(f"val_subjects must be in 1..{n - 1}, got {val_subjects}")
    test = activity[fold]
    val = [activity[(fold + k) % n] for k in range(1, val_subjects + 1)]
    return {"train": [s for s in subjects if s != test and s not in val],
            "val": sorted(val), "test": [test]}


_ALIGNED: dict[tuple, tuple[list[AlignedTrial | None], list[tuple[str, str]]]] = {}


def _aligned_trials(root: Path, trials: list[TrialFiles], rate_hz: float,
                    quarantine: Quarantine) -> list[AlignedTrial | None]:
    """:func:`load_trial` of every trial, memoised per folder state (files' size and mtime) and
    rate; the problems are replayed into ``quarantine`` in order (strict: the first raises)."""
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns)
                  for t in trials for p in t.paths.values())
    key = (str(root.resolve()), rate_hz, stats)
    if key not in _ALIGNED:
        local = Quarantine(strict=False)  # every problem, replayed below in order
        aligned = [load_trial(t, rate_hz, local, root) for t in trials]
        _ALIGNED.clear()  # one folder state at a time: bounded memory
        _ALIGNED[key] = (aligned, list(local.records))
    aligned, problems = _ALIGNED[key]
    for where, reason in problems:
        quarantine.add(where, reason)
    return aligned


def load(
    strict: bool = False,
    rate_hz: float = 200.0,
    window_s: float = 2.0,
    hop_s: float = 1.0,
    min_presence: float = 0.8,
    test_subject: int | None = None,
    val_subject: int | None = None,
    root: str | Path | None = None,
    verbose: bool = True,
    full: bool = False,
    fold: int | None = None,
    val_subjects: int = 1,
    ori_channels: list[str] | None = None,
    magnitude: bool = False,
    fall_margin_s: float | None = None,
    rotate_copies: int = 0,
    rotate_deg: float = 45.0,
) -> MultimodalDataset:
    """Windows of every trial as the ``mobifall`` dataset (see the module docstring).

    Modalities ``acc`` [T, 3], ``gyro`` [T, 3], ``ori`` [T, 4] (float32 time series, T =
    ``window_s * rate_hz``); splits ``train`` / ``val`` / ``test`` by subject. ``root`` defaults
    to :func:`data_root` (``full=True``: the 24-subject copy). ``fold`` selects leave-one-
    subject-out (``test_subject``/``val_subject`` must then be unset; without ``fold`` they
    default to 4 and 3). ``info`` holds the quarantine, the window counts and the drops.
    Subject-independence options (module docstring, "Options"): ``ori_channels`` keeps those
    :data:`CHANNELS` of ``ori`` (e.g. without the azimuth), ``magnitude`` appends ``|acc|`` and
    ``|gyro|``, ``fall_margin_s`` keeps only fall windows around the impact, ``rotate_copies``
    adds rotated copies (up to ``rotate_deg``) of the training trials' acc and gyro.
    """
    length, hop = _steps(window_s, rate_hz, "window_s"), _steps(hop_s, rate_hz, "hop_s")
    if not 0.0 <= min_presence <= 1.0:
        raise ValueError(f"min_presence must be in [0, 1], got {min_presence}")
    channels = _channels(ori_channels, magnitude)
    margin = None
    if fall_margin_s is not None:
        margin = round(fall_margin_s * rate_hz)
        if not 0 <= margin < length / 2:
            raise ValueError(f"fall_margin_s must be in [0, window_s / 2), got {fall_margin_s}")
    if rotate_copies < 0 or not 0.0 <= rotate_deg <= 180.0:
        raise ValueError(f"rotate_copies must be >= 0 and rotate_deg in [0, 180], got "
                         f"{rotate_copies} and {rotate_deg}")
    if fold is not None and (test_subject is not None or val_subject is not None):
        raise ValueError("fold picks the test and validation subjects: leave test_subject and "
                         "val_subject unset with fold")
    root = Path(root) if root is not None else data_root(full=full)
    quarantine = Quarantine(strict=strict)
    trials = find_trials(root, quarantine)
    if not trials:
        skipped = f"; {len(quarantine)} bad record(s) were skipped" if len(quarantine) else ""
        raise EmptyDataError(f"{root}: no complete MobiFall trials (sub*/**/<CODE>_<sensor>_"
                             f"<subject>_<trial>.txt){skipped}")
    subjects = sorted({t.subject for t in trials})
    if fold is not None:
        groups = fold_subjects(subjects, loso_subjects(trials), fold, val_subjects)
    else:
        test_subject = 4 if test_subject is None else test_subject
        val_subject = 3 if val_subject is None else val_subject
        if test_subject == val_subject:
            raise ValueError(f"test_subject and val_subject are both {test_subject}; pick two")
        for name, subject in (("test_subject", test_subject), ("val_subject", val_subject)):
            if subject not in subjects:
                split = name.removesuffix("_subject")
                raise EmptyDataError(f"{root}: split {split!r} is empty: {name}={subject} has "
                                     f"no trials; subjects: {subjects}")
        if len(subjects) < 3:
            raise EmptyDataError(f"{root}: split 'train' is empty: need a training subject "
                                 f"besides {val_subject} and {test_subject}; subjects: {subjects}")
        groups = {"train": [s for s in subjects if s not in (val_subject, test_subject)],
                  "val": [val_subject], "test": [test_subject]}
    split_of = {s: name for name, members in groups.items() for s in members}
    parts: dict[str, dict[str, list[np.ndarray]]] = {"train": {}, "val": {}, "test": {}}
    dropped: list[dict[str, Any]] = []
    off_impact: list[dict[str, Any]] = []
    n_loaded = 0
    for aligned in _aligned_trials(root, trials, rate_hz, quarantine):
        if aligned is None:
            continue
        n_loaded += 1
        split = split_of[aligned.files.subject]
        features = _features(aligned, channels)
        impact = None
        if margin is not None and aligned.files.code not in ADLS:
            impact = _impact_window(features["acc"], aligned.mask["acc"], length, hop, margin)
        rotations = [np.eye(3)]
        if split == "train":
            rotations += [_rotation(aligned.files, k, rotate_deg) for k in range(rotate_copies)]
        for copy, rotation in enumerate(rotations):
            windows = _trial_windows(aligned, _rotate(features, rotation, magnitude), length,
                                     hop, min_presence, rate_hz, dropped if copy == 0 else [],
                                     impact, off_impact if copy == 0 else [])
            windows["copy"] = np.full(windows["label"].size, copy, np.int64)
            for key, value in windows.items():
                parts[split].setdefault(key, []).append(value)
    splits = {name: {k: np.concatenate(v) for k, v in arrays.items()}
              for name, arrays in parts.items()}
    check_not_empty(splits, root, quarantine)
    kept = {name: int(arrays["label"].size) for name, arrays in splits.items()}
    info = {
        "quarantine": quarantine,
        "root": str(root),
        "rate_hz": rate_hz,
        "channels": channels,
        "subjects": groups,
        "fold": fold,
        "trials": {"found": len(trials), "loaded": n_loaded, "skipped": len(trials) - n_loaded},
        "windows": {"kept": sum(kept.values()), "dropped_low_presence": len(dropped),
                    "dropped_off_impact": len(off_impact), "per_split": kept},
        "dropped_windows": dropped,
        "off_impact_windows": off_impact,
    }
    if verbose:
        where = f"fold {fold} (test {groups['test']}, val {groups['val']}), " if fold is not None \
            else ""
        print(f"mobifall: {where}{n_loaded}/{len(trials)} trials, {sum(kept.values())} windows "
              f"(train/val/test {kept['train']}/{kept['val']}/{kept['test']}), {len(dropped)} "
              f"dropped with a stream present on < {min_presence:.0%} of their steps")
    modalities = {
        s: ModalitySpec(s, "timeseries", (length, len(channels[s])),
                        options={"rate_hz": rate_hz, "channels": channels[s]})
        for s in SENSORS
    }
    return MultimodalDataset("mobifall", modalities, list(CLASSES), splits, info)


def _steps(seconds: float, rate_hz: float, name: str) -> int:
    steps = seconds * rate_hz
    if steps < 1 or abs(steps - round(steps)) > 1e-6:
        raise ValueError(f"{name} * rate_hz must be a whole number >= 1, got {steps}")
    return round(steps)


def _channels(ori_channels: list[str] | None, magnitude: bool) -> dict[str, list[str]]:
    """Channel names per sensor for the ``ori_channels`` and ``magnitude`` options."""
    ori = list(CHANNELS["ori"]) if ori_channels is None else list(ori_channels)
    unknown = [c for c in ori if c not in CHANNELS["ori"]]
    if unknown or not ori or len(set(ori)) < len(ori):
        raise ValueError(f"ori_channels must be distinct names out of {list(CHANNELS['ori'])} "
                         f"(drop ori altogether with modalities), got {ori_channels}")
    extra = ["norm"] if magnitude else []
    return {"acc": [*CHANNELS["acc"], *extra], "gyro": [*CHANNELS["gyro"], *extra],
            "ori": [c for c in CHANNELS["ori"] if c in ori]}


def _features(trial: AlignedTrial, channels: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Gaps of each stream imputed (``linear``) and ``ori`` reduced to ``channels["ori"]``."""
    out = {}
    for sensor in SENSORS:
        out[sensor], _ = impute(trial.values[sensor], trial.mask[sensor], strategy="linear")
    out["ori"] = out["ori"][:, [CHANNELS["ori"].index(c) for c in channels["ori"]]]
    return out


def _rotate(features: dict[str, np.ndarray], rotation: np.ndarray,
            magnitude: bool) -> dict[str, np.ndarray]:
    """acc and gyro in a phone frame turned by ``rotation`` [3, 3], plus their norms if
    ``magnitude``; ``ori`` unchanged (its angles cannot be re-derived without the magnetometer
    heading model, so rotated copies keep the recorded ones)."""
    out = dict(features)
    for sensor in ("acc", "gyro"):
        x = features[sensor] @ rotation.T
        out[sensor] = np.concatenate([x, np.linalg.norm(x, axis=1, keepdims=True)], axis=1) \
            if magnitude else x
    return out


def _rotation(files: TrialFiles, copy: int, max_deg: float) -> np.ndarray:
    """Rotation matrix about a uniformly random axis by an angle uniform in [0, ``max_deg``],
    seeded by the trial and ``copy`` (the same copies in every fold and run)."""
    seed = [CLASSES.index(files.code), files.subject, files.trial, copy]
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, max_deg))
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)  # Rodrigues


def _impact_window(acc: np.ndarray, acc_mask: np.ndarray, length: int, hop: int,
                   margin: int) -> np.ndarray:
    """Per window (bool): the trial's peak of ``|acc|`` (over real samples) lies at least
    ``margin`` steps inside it: the fall-centred labelling rule."""
    norm = np.where(acc_mask, np.linalg.norm(acc, axis=1), -np.inf)
    peak = int(np.argmax(norm))
    starts = window_starts(acc.shape[0], length, hop)
    return (starts + margin <= peak) & (peak < starts + length - margin)


def _trial_windows(
    trial: AlignedTrial,
    features: dict[str, np.ndarray],
    length: int,
    hop: int,
    min_presence: float,
    rate_hz: float,
    dropped: list[dict[str, Any]],
    impact: np.ndarray | None = None,
    off_impact: list[dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Windows of one trial's ``features`` (:func:`_features`) with enough data present (and
    around the impact, where ``impact`` [windows] is given; the others with enough data go to
    ``off_impact``), plus metadata."""
    starts = window_starts(trial.t_ns.size, length, hop)
    presence = {s: sliding_windows(m, length, hop).mean(axis=1) for s, m in trial.mask.items()}
    keep = np.min(np.stack(list(presence.values())), axis=0) >= min_presence
    for i in np.flatnonzero(~keep):
        dropped.append({"file": trial.files.file, "start_s": float(starts[i] / rate_hz),
                        "presence": {s: round(float(p[i]), 3) for s, p in presence.items()}})
    if impact is not None:
        for i in np.flatnonzero(keep & ~impact) if off_impact is not None else []:
            off_impact.append({"file": trial.files.file, "start_s": float(starts[i] / rate_hz)})
        keep &= impact
    n = int(keep.sum())
    out: dict[str, np.ndarray] = {}
    for sensor in SENSORS:
        out[sensor] = sliding_windows(features[sensor].astype(np.float32), length, hop)[keep]
        out[f"{sensor}_mask"] = sliding_windows(trial.mask[sensor], length, hop)[keep]
        out[f"{sensor}_presence"] = presence[sensor][keep].astype(np.float32)
    out["label"] = np.full(n, trial.label, np.int32)
    out["subject"] = np.full(n, trial.files.subject, np.int64)
    out["trial"] = np.full(n, trial.files.trial, np.int64)
    out["file"] = np.full(n, trial.files.file)
    out["start_s"] = starts[keep] / rate_hz
    return out
