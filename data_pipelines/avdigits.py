"""Dataset ``avdigits``: real spoken digits (FSDD) paired with real handwritten digits (MNIST).

Each example is one Free Spoken Digit Dataset recording and one MNIST test image of the same
digit; the label is that digit. Both modalities are real recordings: nothing is synthesised,
degraded or mixed with noise (unlike MultiBench's AV-MNIST, which removes PCA energy from the
images and mixes ESC-50 noise into the audio).

Sources
-------
* **FSDD** (``Jakobovski/free-spoken-digit-dataset`` at commit :data:`FSDD_COMMIT`): 3000 WAV
  files ``{digit}_{speaker}_{index}.wav``, 8 kHz mono 16-bit, 6 speakers x 10 digits x 50,
  0.14-2.28 s (median 0.42 s). CC BY-SA 4.0 (upstream README).
* **MNIST** test set (``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``): 10000
  images 28x28 uint8 and their labels. CC BY-SA 3.0 (LeCun & Cortes). The pairs inherit
  share-alike terms.

Location: ``$MMKERAS_DATA_DIR/fsdd/recordings/`` and ``$MMKERAS_DATA_DIR/mnist/`` when present
(:func:`mmkeras.data.download.local_data`). Otherwise they are downloaded once into
``$MMKERAS_CACHE`` (default ``~/.cache/mmkeras``) ``/fsdd/recordings`` and ``/mnist``:

* FSDD: the GitHub archive of commit :data:`FSDD_COMMIT` (:data:`FSDD_URL`); its
  ``recordings/*.wav`` are extracted and accepted only if ``folder_digest(recordings,
  "*.wav")`` equals :data:`FSDD_WAV_DIGEST` (computed on the reference copy). The zip itself
  is not pinned: GitHub generates archives on the fly and does not guarantee their bytes.
* MNIST: from :data:`MNIST_MIRROR` (Google's CVDF mirror); each file is accepted only if the
  sha256 of its **decompressed** IDX payload equals :data:`MNIST_PAYLOAD_SHA256` (computed on
  the reference copy, whose payload md5s are the canonical MNIST ones). The ``.gz`` bytes are
  not pinned because copies differ in their gzip headers: the reference copy's ``.gz`` sha256
  (``1673100...`` for the images) is not the mirror's (``8d422c7...``), the payloads are equal.

Pairing recipe (deterministic; ``$MMKERAS_DATA_DIR/avdigits/README.md``)
-------------------------------------------------------------------------
1. FSDD clips sorted by file name (lexicographic: ``0_george_0, 0_george_1, 0_george_10, ...``).
2. Speaker-disjoint splits (:data:`SPLIT_SPEAKERS`): train = george, jackson, lucas, nicolas
   (2000 clips), val = theo (500), test = yweweler (500); 200 / 50 / 50 clips per digit.
3. Disjoint MNIST-t10k index pools (:data:`IMAGE_POOLS`): train [0, 6000), val [6000, 8000),
   test [8000, 10000) (smallest per-digit pools 548 / 175 / 169).
4. ``rng = numpy.random.default_rng(0)``; for split in (train, val, test), for digit 0..9:
   ``chosen = rng.permutation(pool indices whose label is digit)[:n clips of that digit]`` and
   clip ``k`` of that digit (file-name order) gets image ``chosen[k]``: without replacement, so
   no image is used twice and every pair's labels agree. The first train pairs are
   ``0_george_0.wav -> 441``, ``0_george_1.wav -> 5251``, ``0_george_10.wav -> 4188``.

Pairs depend on file names only, so a bad recording removes its own pair and leaves every other
pair unchanged.

Bad records
-----------
:func:`load` reads every paired WAV with the checked reader
:func:`mmkeras.data.audio.read_audio` (expected rate 8000 Hz). Undecodable, truncated or empty
files, NaN/inf samples (float WAVs), a wrong sample rate and file names that do not follow
``{digit}_{speaker}_{index}.wav`` with a known speaker go to ``dataset.info["quarantine"]``
(record: the file path; reason: the problem), or raise
:class:`~mmkeras.data.quarantine.BadRecordError` with ``strict=True``. All 3000 reference
recordings are good. Corrupt MNIST files raise ``ValueError`` (the dataset cannot be built
without them); a folder with no usable recordings, or a split left without examples, raises
:class:`~mmkeras.data.quarantine.EmptyDataError` naming the folder and split.

Modalities (what the model's raw input is)
------------------------------------------
* ``audio``: float32 ``[clip_samples]`` waveform in [-1, 1] (16-bit PCM / 32768), zero-padded
  at the end or cropped keeping the start (the rule of :func:`mmkeras.data.audio.pad_or_crop`;
  8000 samples = 1 s keeps all but the tails of 20 clips). Options: ``sample_rate`` 8000,
  ``n_fft`` 256, ``hop_length`` 128, ``n_mels`` (and ``top_db`` when given): the model's
  in-graph log-mel front end.
* ``image``: uint8 ``[28, 28, 1]`` MNIST digit (white on black). With ``augment=True`` the
  intermediate/late encoders get random shifts (10 %) and rotations (up to 18 degrees) during
  training only (:class:`mmkeras.data.image.ImageAugmentation`).

Training-time augmentation is not part of the dataset: the run configuration's ``augment``
field (:mod:`mmkeras.data.augment`; the shipped ``data_pipelines/configs/avdigits.yaml`` sets
speed, shift, gain, noise and SpecAugment masks for the audio, rotation and translation for the
images) acts on training batches in ``tf.data`` only. Without it the unseen test speaker is
recognised from the audio far worse than the training speakers (see ``benchmarks/RESULTS.md``).

Labels 0-9 (class names ``"0"``..``"9"``); metadata columns ``speaker``, ``file`` (WAV file
name) and ``mnist_index`` (row in the MNIST t10k files).

Streaming pipelines (for benchmarks)
------------------------------------
:func:`tf_pipeline` (``tf.data``: batch the file paths, then per batch in a parallel ``map``:
read files, decode WAV, pad/crop, log-mel and image standardisation; prefetch) and
:func:`python_loader` (per example: soundfile, numpy, ``librosa.feature.melspectrogram``)
compute the same features: the log-mel spectrogram in dB ``[frames, n_mels]`` (floored
``top_db`` = 80 dB below each clip's peak) and the image standardised per channel with
train-split statistics. They agree within the audio module's tolerance (5e-3 dB;
``mmkeras.data.audio``), which holds with the ``top_db`` floor. Neither screens bad files: use
:func:`load` for that (``tf_pipeline`` fails at the bad file's batch, ``python_loader`` raises
``ValueError`` naming it).

Example:
    >>> ds = load()                                                   # doctest: +SKIP
    >>> ds.splits["train"]["audio"].shape, ds.splits["train"]["image"].shape  # doctest: +SKIP
    ((2000, 8000), (2000, 28, 28, 1))
    >>> feats, label = next(iter(tf_pipeline("val", batch_size=32)))  # doctest: +SKIP
    >>> feats["audio"].shape, feats["image"].shape                    # doctest: +SKIP
    (TensorShape([32, 63, 40]), TensorShape([32, 28, 28, 1]))
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from mmkeras.data.audio import LogMelSpectrogram, decode_wav, pad_or_crop, read_audio
from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
from mmkeras.data.download import cache_root, download, folder_digest, local_data
from mmkeras.data.image import fit_image_stats, standardize_images
from mmkeras.data.quarantine import Quarantine, check_not_empty
from mmkeras.data.standardize import Standardizer

SEED = 0
SPLIT_SPEAKERS: dict[str, tuple[str, ...]] = {
    "train": ("george", "jackson", "lucas", "nicolas"),
    "val": ("theo",),
    "test": ("yweweler",),
}
IMAGE_POOLS: dict[str, tuple[int, int]] = {
    "train": (0, 6000), "val": (6000, 8000), "test": (8000, 10000),
}
CLASS_NAMES = [str(d) for d in range(10)]
SAMPLE_RATE, N_FFT, HOP_LENGTH = 8000, 256, 128
TOP_DB = 80.0

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.zip"
FSDD_WAV_DIGEST = "710e3ab45fe6e3b6efb45169826617fecd89ea09ab259f489e68e1325b34116d"
MNIST_MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST_IMAGES, MNIST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
MNIST_PAYLOAD_SHA256 = {
    MNIST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    MNIST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
_SPEAKER_SPLIT = {spk: split for split, spks in SPLIT_SPEAKERS.items() for spk in spks}
VAL_FOLD_SPEAKERS: tuple[str, ...] = (*SPLIT_SPEAKERS["train"], *SPLIT_SPEAKERS["val"])


def split_speakers(val_fold: int | None = None) -> dict[str, str]:
    """Speaker -> split. ``val_fold`` k validates on ``VAL_FOLD_SPEAKERS[k]`` instead of theo.

    The test speaker stays yweweler and theo trains in its place, so the five folds rotate the
    validation speaker over the five non-test speakers (fold 4 is the default split).

    Example:
        >>> split_speakers(0)["george"], split_speakers(0)["theo"], split_speakers()["theo"]
        ('val', 'train', 'val')
    """
    if val_fold is None:
        return dict(_SPEAKER_SPLIT)
    if not 0 <= val_fold < len(VAL_FOLD_SPEAKERS):
        raise ValueError(f"val_fold must be in 0-{len(VAL_FOLD_SPEAKERS) - 1} (the validation "
                         f"speaker, one of {', '.join(VAL_FOLD_SPEAKERS)}); got {val_fold}")
    val = VAL_FOLD_SPEAKERS[val_fold]
    return {spk: ("val" if spk == val else "train" if split != "test" else split)
            for spk, split in _SPEAKER_SPLIT.items()}


class Pair(NamedTuple):
    """One example of the recipe: FSDD file name, MNIST t10k row, digit, speaker."""

    file: str
    mnist_index: int
    digit: int
    speaker: str


# ---------------------------------------------------------------------------- data location
def _payload_sha256(path: Path) -> str | None:
    """sha256 of a gzip file's decompressed content (None if it is not valid gzip)."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError):
        return None
    return digest.hexdigest()


def _download_fsdd(recordings: Path) -> None:
    """Extract ``recordings/*.wav`` of the pinned FSDD archive; verify the WAV digest."""
    recordings.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=recordings.parent) as tmp:
        archive, staging = Path(tmp) / "fsdd.zip", Path(tmp) / "recordings"
        print(f"downloading FSDD from {FSDD_URL}")
        download(FSDD_URL, archive)
        staging.mkdir()
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                parts = member.split("/")
                if len(parts) == 3 and parts[1] == "recordings" and parts[2].endswith(".wav"):
                    (staging / parts[2]).write_bytes(zf.read(member))
        digest = folder_digest(staging, "*.wav")
        if digest != FSDD_WAV_DIGEST:
            raise ValueError(
                f"FSDD download from {FSDD_URL} does not match the pinned recordings "
                f"(folder digest {digest}, expected {FSDD_WAV_DIGEST}); retry, or place a "
                "verified copy in $MMKERAS_DATA_DIR/fsdd/recordings"
            )
        staging.replace(recordings)


def _download_mnist(folder: Path) -> None:
    """Download the MNIST t10k files; verify the sha256 of their decompressed payloads."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, expected in MNIST_PAYLOAD_SHA256.items():
        dest = folder / name
        if dest.is_file() and _payload_sha256(dest) == expected:
            continue
        part = dest.with_name(name + ".part")
        print(f"downloading {MNIST_MIRROR + name}")
        download(MNIST_MIRROR + name, part)
        actual = _payload_sha256(part)
        if actual != expected:
            part.unlink()
            raise ValueError(
                f"{MNIST_MIRROR + name}: decompressed sha256 {actual}, expected {expected}; "
                "retry, or place a verified copy in $MMKERAS_DATA_DIR/mnist"
            )
        part.replace(dest)


def data_folders() -> tuple[Path, Path]:
    """``(FSDD recordings folder, MNIST folder)``: the local copies, else verified downloads.

    Example:
        >>> recordings, mnist = data_folders()          # doctest: +SKIP
        >>> len(list(recordings.glob("*.wav")))         # doctest: +SKIP
        3000
    """
    fsdd, mnist = local_data("fsdd"), local_data("mnist")
    recordings = fsdd / "recordings" if fsdd else cache_root() / "fsdd" / "recordings"
    if fsdd is None and not recordings.is_dir():
        _download_fsdd(recordings)
    if mnist is None:
        mnist = cache_root() / "mnist"
        if any(not (mnist / name).is_file() for name in MNIST_PAYLOAD_SHA256):
            _download_mnist(mnist)
    return recordings, mnist


def read_idx(path: str | Path) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (MNIST) -> uint8 array of its dimensions.

    Raises:
        ValueError: naming the file, if it is not gzip, not uint8 IDX, or its size does not
            match its header.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read gzip IDX file: {err}") from err
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(f"{path}: IDX header says {dims}, file has {len(raw) - header} bytes")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_mnist(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST t10k ``(images uint8 [10000, 28, 28], labels uint8 [10000])`` from ``folder``."""
    folder = Path(folder)
    images, labels = read_idx(folder / MNIST_IMAGES), read_idx(folder / MNIST_LABELS)
    if images.shape != (10000, 28, 28) or labels.shape != (10000,) or labels.max() > 9:
        raise ValueError(
            f"{folder}: expected 10000 MNIST test images 28x28 and labels 0-9, "
            f"got {images.shape} and {labels.shape}"
        )
    return images, labels


# ----------------------------------------------------------------------------------- recipe
def pair_clips(files: list[str], mnist_labels: np.ndarray, seed: int = SEED,
               val_fold: int | None = None) -> dict[str, list]:
    """The pairing recipe: ``{split: [Pair, ...]}`` from FSDD file names and MNIST labels.

    ``files`` are file names ``{digit}_{speaker}_{index}.wav`` with speakers of
    :data:`SPLIT_SPEAKERS` (others raise ValueError; :func:`load` quarantines them first);
    ``val_fold`` picks the validation speaker (:func:`split_speakers`). Each split's clips are
    paired with images of that split's MNIST pool, whichever speakers it holds.

    Example:
        >>> _, labels = read_mnist(data_folders()[1])                     # doctest: +SKIP
        >>> files = sorted(p.name for p in data_folders()[0].glob("*.wav"))  # doctest: +SKIP
        >>> pair_clips(files, labels)["train"][0]                         # doctest: +SKIP
        Pair(file='0_george_0.wav', mnist_index=441, digit=0, speaker='george')
    """
    clips: dict[str, list[tuple[str, int, str]]] = {split: [] for split in SPLIT_SPEAKERS}
    speaker_split = split_speakers(val_fold)
    for name in sorted(files):
        match = _NAME.match(name)
        if match is None or match.group(2) not in _SPEAKER_SPLIT:
            raise ValueError(f"{name}: not an FSDD clip name of a known speaker")
        digit, speaker = int(match.group(1)), match.group(2)
        clips[speaker_split[speaker]].append((name, digit, speaker))
    rng = np.random.default_rng(seed)
    pairs: dict[str, list[Pair]] = {}
    for split, (lo, hi) in IMAGE_POOLS.items():
        out: list[Pair] = []
        for digit in range(10):
            dclips = [c for c in clips[split] if c[1] == digit]
            pool = np.arange(lo, hi)[mnist_labels[lo:hi] == digit]
            if len(pool) < len(dclips):
                raise ValueError(f"{split}: {len(dclips)} clips of digit {digit}, "
                                 f"only {len(pool)} MNIST images in its pool")
            chosen = rng.permutation(pool)[: len(dclips)]
            out += [Pair(n, int(i), d, s) for (n, d, s), i in zip(dclips, chosen, strict=True)]
        pairs[split] = out
    return pairs


def _pairs_and_images() -> tuple[Path, dict[str, list[Pair]], np.ndarray]:
    """(recordings folder, recipe pairs of all well-named files, MNIST images [N, 28, 28, 1])."""
    recordings, mnist = data_folders()
    images, labels = read_mnist(mnist)
    names = sorted(p.name for p in recordings.glob("*.wav"))
    good = [n for n in names if (m := _NAME.match(n)) and m.group(2) in _SPEAKER_SPLIT]
    return recordings, pair_clips(good, labels), images[..., None]


def _image_standardizer(pairs: dict[str, list[Pair]], images: np.ndarray) -> Standardizer:
    return fit_image_stats(images[[p.mnist_index for p in pairs["train"]]])


# ------------------------------------------------------------------------------------- load
def load(
    strict: bool = False, clip_samples: int = 8000, n_mels: int = 40, augment: bool = False,
    top_db: float | None = None, val_fold: int | None = None,
) -> MultimodalDataset:
    """Build the paired dataset (all 3000 clips decoded in memory, ~100 MB; ~1 s).

    Args:
        strict: raise :class:`~mmkeras.data.quarantine.BadRecordError` at the first bad file
            instead of quarantining it.
        clip_samples: waveform length (zero-padded at the end / cropped keeping the start).
        n_mels: mel bands of the model's in-graph log-mel front end (``audio`` options).
        augment: random shifts/rotations of the images during training (see module docs).
        top_db: floor of the model's log-mel front end, in dB below each clip's peak (None:
            the front end's default, 80 dB).
        val_fold: speaker-grouped validation folds for choosing settings without the test
            speaker: 0-4 validates on george, jackson, lucas, nicolas or theo, and theo trains
            in that speaker's place (:func:`split_speakers`; 4 and None: the default split).

    Example:
        >>> ds = load()                                       # doctest: +SKIP
        >>> [ds.num_examples(s) for s in ("train", "val", "test")]  # doctest: +SKIP
        [2000, 500, 500]
    """
    quarantine = Quarantine(strict=strict)
    recordings, mnist = data_folders()
    images, labels = read_mnist(mnist)
    good_names = []
    for path in sorted(recordings.glob("*.wav")):
        match = _NAME.match(path.name)
        if match is None:
            quarantine.add(path, "unexpected file name: expected {digit}_{speaker}_{index}.wav")
        elif match.group(2) not in _SPEAKER_SPLIT:
            quarantine.add(path, f"unknown speaker: {match.group(2)!r} is in no split "
                                 f"(known: {sorted(_SPEAKER_SPLIT)})")
        else:
            good_names.append(path.name)
    pairs = pair_clips(good_names, labels, val_fold=val_fold)

    splits: dict[str, dict[str, np.ndarray]] = {}
    for split, split_pairs in pairs.items():
        kept, clips = [], []
        for pair in split_pairs:
            path = recordings / pair.file
            try:
                clip, _ = read_audio(path, expected_rate=SAMPLE_RATE)
            except (ValueError, OSError) as err:
                quarantine.add(path, str(err).removeprefix(f"{path}: "))
                continue
            kept.append(pair)
            clips.append(clip)
        audio = np.zeros((len(kept), clip_samples), np.float32)
        for row, clip in zip(audio, clips, strict=True):  # pad_or_crop's rule, in numpy
            row[: len(clip)] = clip[:clip_samples]
        index = np.array([p.mnist_index for p in kept], np.int64)
        splits[split] = {
            "audio": audio,
            "image": images[index][..., None],
            "label": np.array([p.digit for p in kept], np.int32),
            "speaker": np.array([p.speaker for p in kept]),
            "file": np.array([p.file for p in kept]),
            "mnist_index": index,
        }
    audio_options = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH,
                     "n_mels": n_mels, **({} if top_db is None else {"top_db": top_db})}
    image_options = {"augment": {"translation": 0.1, "rotation": 0.05}} if augment else {}
    modalities = {
        "audio": ModalitySpec("audio", "audio", (clip_samples,), options=audio_options),
        "image": ModalitySpec("image", "image", (28, 28, 1), "uint8", options=image_options),
    }
    check_not_empty(splits, recordings, quarantine)
    info = {"quarantine": quarantine, "recordings": str(recordings), "mnist": str(mnist)}
    return MultimodalDataset("avdigits", modalities, CLASS_NAMES, splits, info)


# -------------------------------------------------------------------------- streaming loaders
def tf_pipeline(
    split: str,
    batch_size: int = 64,
    clip_samples: int = 8000,
    n_mels: int = 40,
    top_db: float = TOP_DB,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Streaming ``tf.data`` features of one split: ``({"audio", "image"}, label)`` batches.

    File paths, MNIST images (gathered from the in-memory array) and labels are batched
    first; then one parallel ``map`` call per batch: ``tf.io.read_file``, `decode_wav` and
    `pad_or_crop` for each file, the sample rates asserted to be 8000 Hz (naming the bad
    files), `LogMelSpectrogram` (dB, ``top_db`` floor per clip) on the whole batch and the
    images standardised per channel with train-split statistics; then prefetch. ``audio``
    is float32 ``[B, frames, n_mels]``, ``image`` float32 ``[B, 28, 28, 1]``, label int32
    ``[B]``.

    Example:
        >>> feats, y = next(iter(tf_pipeline("test", batch_size=8)))   # doctest: +SKIP
        >>> feats["audio"].shape                                       # doctest: +SKIP
        TensorShape([8, 63, 40])
    """
    recordings, pairs, images = _pairs_and_images()
    standardizer = _image_standardizer(pairs, images)
    chosen = pairs[split]
    logmel = LogMelSpectrogram(SAMPLE_RATE, N_FFT, HOP_LENGTH, n_mels, top_db=top_db)
    paths = [str(recordings / p.file) for p in chosen]
    ds = tf.data.Dataset.from_tensor_slices((
        paths,
        images[[p.mnist_index for p in chosen]],
        np.array([p.digit for p in chosen], np.int32),
    ))
    if shuffle:
        ds = ds.shuffle(len(chosen), seed=seed, reshuffle_each_iteration=True)

    def waveform(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        audio, rate = decode_wav(tf.io.read_file(path))
        return pad_or_crop(audio, clip_samples), rate

    def features(paths: tf.Tensor, image: tf.Tensor, label: tf.Tensor):
        # one map call per batch, not per file: less tf.data overhead, coarser parallel tasks
        audio, rate = tf.map_fn(waveform, paths, fn_output_signature=(
            tf.TensorSpec([clip_samples], tf.float32), tf.TensorSpec([], tf.int32)))
        bad = tf.not_equal(rate, SAMPLE_RATE)
        check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
            tf.boolean_mask(paths, bad), "sample rate", tf.boolean_mask(rate, bad),
            "Hz, expected", SAMPLE_RATE])
        with tf.control_dependencies([check]):
            audio = tf.identity(audio)
        return {"audio": logmel(audio), "image": standardize_images(image, standardizer)}, label

    ds = ds.batch(batch_size).map(features, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def python_loader(
    split: str,
    clip_samples: int = 8000,
    n_mels: int = 40,
    top_db: float = TOP_DB,
    batch_size: int | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | int]]:
    """Plain Python baseline of :func:`tf_pipeline`: one example at a time, same features.

    Per example: ``soundfile.read`` (float32, 16-bit PCM / 32768; ValueError naming the file
    if it is not 8000 Hz), zero-pad/crop in numpy, ``librosa.feature.melspectrogram``
    (periodic Hann, centred, zero padding, Slaney mel) and ``librosa.power_to_db(ref=1,
    amin=1e-10, top_db=top_db)``, image ``(x - center) / scale`` in numpy. Yields
    ``({"audio": [frames, n_mels], "image": [28, 28, 1]}, label)`` float32 per example, or
    stacked batches (last one smaller) when ``batch_size`` is given.

    Example:
        >>> feats, label = next(python_loader("val"))   # doctest: +SKIP
        >>> feats["audio"].shape, label                 # doctest: +SKIP
        ((63, 40), 0)
    """
    import librosa
    import soundfile as sf

    recordings, pairs, images = _pairs_and_images()
    standardizer = _image_standardizer(pairs, images)

    def examples() -> Iterator[tuple[dict[str, np.ndarray], int]]:
        for pair in pairs[split]:
            path = recordings / pair.file
            audio, rate = sf.read(path, dtype="float32")
            if rate != SAMPLE_RATE:
                raise ValueError(f"{path}: sample rate is {rate} Hz, expected {SAMPLE_RATE} Hz")
            if audio.ndim == 2:
                audio = audio.mean(axis=1, dtype=np.float32)
            clip = np.zeros(clip_samples, np.float32)
            clip[: len(audio)] = audio[:clip_samples]
            mel = librosa.feature.melspectrogram(
                y=clip, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=n_mels,
                window="hann", center=True, pad_mode="constant", power=2.0,
            )
            db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=top_db).T
            image = standardizer.transform(images[pair.mnist_index])
            yield {"audio": db.astype(np.float32), "image": image.astype(np.float32)}, pair.digit

    if batch_size is None:
        yield from examples()
        return
    batch: list[tuple[dict[str, np.ndarray], int]] = []
    for example in examples():
        batch.append(example)
        if len(batch) == batch_size:
            yield _stack(batch)
            batch = []
    if batch:
        yield _stack(batch)


def _stack(
    batch: list[tuple[dict[str, np.ndarray], int]],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    feats = {k: np.stack([f[k] for f, _ in batch]) for k in batch[0][0]}
    return feats, np.array([y for _, y in batch], np.int32)
