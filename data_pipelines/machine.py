"""Embedded default dataset ``machine``: synthetic machine-condition-monitoring recordings.

Deterministic (seeded numpy), nothing to download: :func:`generate` writes the raw recordings
to a cache folder, :func:`load_run` reads one run back and :func:`load_windows` aligns every
run onto one timeline and cuts multimodal windows.

Generative model
----------------
Machine ``k`` (id ``"m007"``) draws its properties from ``SeedSequence([seed, k])``; all its
runs share them (so splits must be by machine), and they do not depend on the dataset size:

* rotation frequency ``f_rot ~ U(15, 35)`` Hz (per run x ``N(1, 0.01)`` plus a 0.3% wobble
  with a ``U(5, 15)`` s period);
* vibration (3-axis accelerometer, g): 1x rotation amplitude ``logU(0.05, 0.15)``, 2x and 3x
  harmonics ``logU(0.005, 0.04)`` each (independent of 1x), axis gains (x 1, y ``U(0.6, 1)``
  about 90 deg later, axial z ``U(0.2, 0.5)``), three structural resonances at ``U(40, 120)``,
  ``U(120, 250)`` and ``U(250, 450)`` Hz (Q ``U(5, 15)``) ringing from broadband excitation of
  RMS ``logU(0.005, 0.03)`` each, white sensor noise ``logU(0.003, 0.01)`` and gravity (+1 g
  on z);
* bearing: defect (impact) frequency ``U(3, 5.5)`` x ``f_rot``, a resonance at
  ``U(250, 450)`` Hz (Q ``U(8, 16)``) in vibration and at ``U(1.5, 3.5)`` kHz (Q ``U(10, 25)``)
  in audio;
* audio (microphone, in [-1, 1]): gain ``logU(0.6, 1.6)`` on everything, background noise of
  RMS ``logU(0.01, 0.03)`` (flat up to a ``U(150, 600)`` Hz knee, then -3 dB/octave), a broad
  fan/airflow band at ``U(0.6, 4)`` kHz (Q ``U(1.5, 4)``) of RMS ``logU(0.002, 0.012)``,
  rotation hum at 1x and 2x ``f_rot`` of amplitude ``logU(0.004, 0.012)`` each and mains hum at
  50 or 60 Hz of amplitude ``logU(0.0005, 0.003)``;
* environment: temperature ``U(18, 32)`` degC ambient plus ``U(3, 10)`` degC self-heating,
  relative humidity ``U(30, 70)`` %.

Run ``j`` of machine ``k`` (id ``"m007-r1"``) has a severity ``s ~ U(0, 1)`` and condition
``DEAL_ORDER[i % 4]`` with ``i = k * runs_per_machine + j``: runs are numbered in order and
conditions dealt in turn as normal, overheating, bearing_wear, imbalance. So classes are
balanced whenever ``n_machines * runs_per_machine`` is a multiple of 4, a machine's runs have
different conditions (for ``runs_per_machine <= 4``), and a machine-grouped split stratified by
the label of each machine's first run stays balanced (:func:`load` splits that way). With 2 runs
per machine, even machines hold ``normal`` and ``overheating`` (identical to vibration and
audio, as they share the machine) and odd machines ``bearing_wear`` and ``imbalance``.

* ``normal``: none of the below.
* ``bearing_wear``: impacts at the defect frequency (1% timing slip, log-normal amplitudes with
  sigma 0.3, modulated by ``1 + 0.5 cos`` of the shaft angle) ring the bearing resonances:
  clearly in audio (peak ``(3 + 3 s)`` x background RMS) and weakly in vibration (peak
  ``(0.02 + 0.04 s)`` g, comparable to the structural noise).
* ``imbalance``: radial 1x vibration x ``(3 + 2 s)`` (axial x ``(2 + s)``) and audio hum x
  ``(3 + 2 s)`` at 1x (x ``(2 + s)`` at 2x); each overlaps the machine-to-machine spread of that
  amplitude, together they rarely do.
* ``overheating``: temperature rises by ``0.1 + 0.3 s`` degC/s; vibration and audio unaffected.

Every run has a temperature offset ``N(0, 1)`` degC, a drift ``N(0, 0.01)`` degC/s and a
``U(0.1, 0.4)`` degC HVAC oscillation (period ``U(60, 300)`` s); humidity follows
``RH0 exp(-0.05 dT)`` (warmer air is drier); sensor noise is ``N(0, 0.05)`` degC and
``N(0, 0.3)`` %, both quantised to 0.1.

Notes are written at inspections at ``t ~ U(0, 0.5)`` s and then every ``U(8, 12)`` s: a
templated sentence with synonyms describing the run's condition (probability 0.7), another
condition (0.2) or nothing specific ("Checked, nothing to report.", 0.1).

So no single modality can tell all four classes apart: vibration and audio cannot separate
``normal`` from ``overheating``, the environment only sees ``overheating`` and a note is wrong
30% of the time. With the default size (seeds 0-2) and simple hand features (FFT band
energies, temperature slope, bag of words), machine-grouped 5-fold CV window accuracy is
0.55-0.64 for vibration, 0.67-0.76 for audio, 0.46-0.53 for the environment and 0.69-0.74 for
notes alone, and 0.97-0.99 for all four together (gradient-boosted trees).

Logger realism: each stream (vibration, audio, environment, notes) has its own clock, ahead of
the reference clock by an offset ``U(-0.5, 0.5)`` s (whole ns; ``offset_<stream>_s`` in
``runs.csv``; subtract it). Samples are taken on the nominal grid (:data:`STREAM_RATES`) but
each timestamp has jitter ``N(0, 0.05 / rate)``. Vibration and audio lose 1% of their samples
at random plus ``Poisson(duration / 10)`` gaps of ``U(10, 80)`` ms; the environment logger
misses 5% of its readings.

Files
-----
``<cache_dir or $MMKERAS_CACHE or ~/.cache/mmkeras>/datasets/`` +
``machine-v1-s{seed}-m{n_machines}-r{runs_per_machine}-d{duration_s}/`` (e.g. ``d30``) holds
``runs.csv`` (``run_id, machine_id, label, duration_s, start_ns, offset_<stream>_s..., path``;
``start_ns`` is the run start, int64 ns on the reference clock) and per run a folder
``<path>/`` with ``<stream>_t.npy`` (int64 ns, logger clock) and ``<stream>_x.npy`` (vibration
float32 [N, 3] g; audio int16 [N, 1] PCM, value x 32768; environment float32 [N, 2] degC and %)
for the three continuous streams, plus ``notes.jsonl`` (``{"t_ns": ..., "text": ...}`` per
line). The same seed gives byte-identical files (with the same numpy).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmkeras.data.align import align, fixed_rate_grid
from mmkeras.data.dataset import ModalitySpec, MultimodalDataset
from mmkeras.data.download import cache_root
from mmkeras.data.impute import impute
from mmkeras.data.quarantine import check_not_empty
from mmkeras.data.splits import group_split
from mmkeras.data.windowing import multirate_windows

CLASSES: tuple[str, ...] = ("normal", "bearing_wear", "imbalance", "overheating")
DEAL_ORDER: tuple[int, ...] = (0, 3, 1, 2)  # class of run i is DEAL_ORDER[i % 4]
STREAM_RATES = {"vibration": 1000, "audio": 8000, "environment": 1}
CLOCKS = ("vibration", "audio", "environment", "notes")
VERSION = "v1"
MARKER = ".complete"
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
_EPOCH_NS = 1_704_096_000 * 10**9  # 2024-01-01T08:00:00Z, first run's start

_UNITS = ("unit", "machine", "motor", "drive", "pump")
_NOTES: dict[str, tuple[str, ...]] = {
    "normal": (
        "{U} running smoothly, all readings {ok}.",
        "{U} {ok}, steady and quiet.",
        "Smooth operation on the {u}, readings {ok}.",
        "{U} quiet and steady, looks {ok}.",
    ),
    "bearing_wear": (
        "{Noise} noise from the bearing housing of the {u}.",
        "{U} bearing sounds {rough}, {noise} at the drive end.",
        "Possible bearing wear: {noise} sound, schedule {fix}.",
        "High-pitched {noise} near the {u} bearing, {fix} advised.",
    ),
    "imbalance": (
        "{U} {shaking} at operating speed, check rotor balance.",
        "Strong once-per-revolution vibration, {u} {shaking}.",
        "Rotor out of balance? {U} {shaking}, base bolts feel it.",
        "Heavy {wobble} on the {u}, looks like imbalance.",
    ),
    "overheating": (
        "{U} casing {hot}, check cooling.",
        "Housing {hot}, temperature climbing on the {u}.",
        "Smell of hot oil, {u} {hot}.",
        "{U} runs hot, fan or cooling fault suspected.",
    ),
}
_VAGUE = (
    "Checked, nothing to report.",
    "Inspection done.",
    "Round completed, logged.",
    "Walked past the {u}, no comment.",
)
_SLOTS = {
    "ok": ("normal", "nominal", "fine", "within limits", "as expected"),
    "noise": ("grinding", "rattling", "clicking", "scraping", "ticking", "screeching"),
    "rough": ("rough", "gritty", "noisy", "dry"),
    "fix": ("bearing replacement", "regreasing", "a bearing check"),
    "shaking": ("shaking", "wobbling", "vibrating hard", "rocking"),
    "wobble": ("wobble", "shaking", "vibration"),
    "hot": ("hot to the touch", "very warm", "overheating", "too hot to hold a hand on"),
}


@dataclass
class Recording:
    """One raw run: per stream ``(t_ns int64 [N], values float32 [N, C])`` on its logger clock.

    ``notes`` is ``(t_ns int64 [K], texts)``; ``offsets_s`` maps every clock in :data:`CLOCKS`
    to its offset ahead of the reference clock; ``start_ns`` is the run start (reference clock).
    """

    run_id: str
    machine_id: str
    label: int
    streams: dict[str, tuple[np.ndarray, np.ndarray]]
    notes: tuple[np.ndarray, list[str]]
    offsets_s: dict[str, float]
    start_ns: int = 0


@dataclass(frozen=True)
class _Machine:
    f_rot: float
    vib_1x: float
    vib_harm: np.ndarray  # [2] 2x, 3x amplitude (g)
    axis_gain: np.ndarray  # [3]
    axis_phase: np.ndarray  # [3] rad
    res_f: np.ndarray  # [3] structural resonances (Hz)
    res_q: np.ndarray
    res_rms: np.ndarray  # [3] g
    vib_noise: float
    defect_ratio: float
    vib_bear_f: float
    vib_bear_q: float
    aud_bear_f: float
    aud_bear_q: float
    mic_gain: float
    bg_rms: float
    bg_knee: float
    fan_f: float
    fan_q: float
    fan_rms: float
    hum: np.ndarray  # [2] 1x, 2x amplitude
    mains_f: float
    mains_amp: float
    temp0: float
    rh0: float


def _log_uniform(
    rng: np.random.Generator, lo: float, hi: float, size: int | None = None
) -> float | np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _draw_machine(rng: np.random.Generator) -> _Machine:
    return _Machine(
        f_rot=rng.uniform(15, 35),
        vib_1x=_log_uniform(rng, 0.05, 0.15),
        vib_harm=_log_uniform(rng, 0.005, 0.04, 2),
        axis_gain=np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.5)]),
        axis_phase=np.array([0.0, np.pi / 2, 0.0]) + rng.uniform(-0.3, 0.3, 3),
        res_f=np.array([rng.uniform(40, 120), rng.uniform(120, 250), rng.uniform(250, 450)]),
        res_q=rng.uniform(5, 15, 3),
        res_rms=_log_uniform(rng, 0.005, 0.03, 3),
        vib_noise=_log_uniform(rng, 0.003, 0.01),
        defect_ratio=rng.uniform(3.0, 5.5),
        vib_bear_f=rng.uniform(250, 450),
        vib_bear_q=rng.uniform(8, 16),
        aud_bear_f=rng.uniform(1500, 3500),
        aud_bear_q=rng.uniform(10, 25),
        mic_gain=_log_uniform(rng, 0.6, 1.6),
        bg_rms=_log_uniform(rng, 0.01, 0.03),
        bg_knee=rng.uniform(150, 600),
        fan_f=rng.uniform(600, 4000),
        fan_q=rng.uniform(1.5, 4),
        fan_rms=_log_uniform(rng, 0.002, 0.012),
        hum=_log_uniform(rng, 0.004, 0.012, 2),
        mains_f=float(rng.choice([50.0, 60.0])),
        mains_amp=_log_uniform(rng, 0.0005, 0.003),
        temp0=rng.uniform(18, 32) + rng.uniform(3, 10),
        rh0=rng.uniform(30, 70),
    )


def _resonance(freqs: np.ndarray, f0: float, q: float) -> np.ndarray:
    """Band-pass resonance response, unit gain at ``f0`` and bandwidth ``f0 / q``."""
    x = 1j * freqs / (q * f0)
    return x / (1 - (freqs / f0) ** 2 + x)


def _unit_rms(response: np.ndarray) -> np.ndarray:
    """Scale a response so that filtered unit white noise has unit RMS."""
    return response / np.sqrt(np.mean(np.abs(response) ** 2))


def _fft_len(n: int) -> int:
    return 1 << int(np.ceil(np.log2(n)))


def _synth(
    rng: np.random.Generator,
    n: int,
    rate: int,
    channels: int,
    noise_response: Callable[[np.ndarray], np.ndarray],
    impacts: tuple[np.ndarray, np.ndarray] | None,
    impact_f: float,
    impact_q: float,
) -> np.ndarray:
    """Coloured noise [n, channels] plus ``impacts`` (times s, peak amplitudes [K, channels])
    ringing a resonance at ``impact_f``; filtered in the frequency domain with a zero-padded tail.
    """
    n_fft = _fft_len(n + rate // 5)
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    spec = np.fft.rfft(rng.standard_normal((n_fft, channels)), axis=0) * noise_response(freqs)
    if impacts is not None:
        times, amps = impacts
        idx = np.rint(times * rate).astype(np.int64)
        spikes = np.stack(
            [np.bincount(idx, amps[:, c], minlength=n_fft) for c in range(channels)], axis=1
        )
        # a unit impulse through the resonance peaks at about 2 pi f0 / (q rate)
        gain = impact_q * rate / (2 * np.pi * impact_f)
        ring = gain * _resonance(freqs, impact_f, impact_q)
        spec += np.fft.rfft(spikes, axis=0) * ring[:, None]
    return np.fft.irfft(spec, n=n_fft, axis=0)[:n]


def _impacts(
    rng: np.random.Generator, duration_s: float, f_rot: float, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bearing-defect impact times (s) and relative amplitudes."""
    period = 1 / (ratio * f_rot)
    k = np.arange(int(duration_s / period) + 1)
    times = (k + rng.uniform()) * period + rng.normal(0, 0.01 * period, k.size)
    amps = rng.lognormal(0, 0.3, k.size) * (1 + 0.5 * np.cos(2 * np.pi * f_rot * times))
    keep = (times >= 0) & (times < duration_s)
    return times[keep], amps[keep]


def _timestamps(
    rng: np.random.Generator, n: int, rate: int, offset_ns: int, start_ns: int, gaps: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Jittered logger timestamps (int64 ns) and the kept-sample index after drops."""
    t = np.arange(n) / rate + rng.normal(0, 0.05 / rate, n)
    t_ns = start_ns + offset_ns + np.rint(t * 1e9).astype(np.int64)
    if gaps:
        keep = rng.random(n) >= 0.01
        duration = n / rate
        for _ in range(rng.poisson(duration / 10)):
            g0 = rng.uniform(0, duration)
            keep[int(g0 * rate) : int((g0 + rng.uniform(0.01, 0.08)) * rate)] = False
    else:
        keep = rng.random(n) >= 0.05
    idx = np.flatnonzero(keep)
    return t_ns[idx], idx


def _note(rng: np.random.Generator, label: int) -> str:
    r = rng.random()
    if r < 0.1:
        template = _VAGUE[rng.integers(len(_VAGUE))]
    else:
        cls = label if r >= 0.3 else (label + 1 + rng.integers(3)) % 4
        options = _NOTES[CLASSES[cls]]
        template = options[rng.integers(len(options))]
    unit = _UNITS[rng.integers(len(_UNITS))]
    fills = {k: v[rng.integers(len(v))] for k, v in _SLOTS.items()}
    fills.update(u=unit, U=unit.capitalize(), Noise=fills["noise"].capitalize())
    return template.format(**fills)


def _run(
    m: _Machine, rng: np.random.Generator, label: int, duration_s: float, start_ns: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[tuple[int, str]], dict[str, int]]:
    """Synthesise one run: logger streams, notes and clock offsets (ns)."""
    cond = CLASSES[label]
    s = rng.uniform()
    offsets = {name: int(rng.integers(-500_000_000, 500_000_001)) for name in CLOCKS}
    f_rot = m.f_rot * (1 + rng.normal(0, 0.01))
    wob_t, wob_ph = rng.uniform(5, 15), rng.uniform(0, 2 * np.pi)
    impacts = _impacts(rng, duration_s, f_rot, m.defect_ratio) if cond == "bearing_wear" else None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def shaft_angle(t: np.ndarray) -> np.ndarray:
        wobble = np.sin(2 * np.pi * t / wob_t + wob_ph) - np.sin(wob_ph)
        return 2 * np.pi * f_rot * (t + 0.003 * wob_t / (2 * np.pi) * wobble)

    # vibration [n, 3] in g
    rate = STREAM_RATES["vibration"]
    n = round(duration_s * rate)
    t = np.arange(n) / rate
    phi = shaft_angle(t)[:, None]
    excess = (2 + 2 * s) if cond == "imbalance" else 0.0
    gain_1x = m.axis_gain * (1 + excess * np.array([1.0, 1.0, 0.5]))
    x = m.vib_1x * gain_1x * np.sin(phi + m.axis_phase)
    for h, amp in enumerate(m.vib_harm, start=2):
        x += amp * m.axis_gain * np.sin(h * phi + h * m.axis_phase + rng.uniform(0, 2 * np.pi))

    def structural(f: np.ndarray) -> np.ndarray:
        modes = zip(m.res_f, m.res_q, m.res_rms, strict=True)
        return sum(rms * _unit_rms(_resonance(f, f0, q)) for f0, q, rms in modes)[:, None]

    vib_impacts = None
    if impacts is not None:
        peak = 0.02 + 0.04 * s
        vib_impacts = (impacts[0], peak * impacts[1][:, None] * m.axis_gain)
    x += _synth(rng, n, rate, 3, structural, vib_impacts, m.vib_bear_f, m.vib_bear_q)
    x += rng.normal(0, m.vib_noise, (n, 3))
    x[:, 2] += 1.0
    t_ns, idx = _timestamps(rng, n, rate, offsets["vibration"], start_ns, gaps=True)
    out["vibration"] = (t_ns, x[idx].astype(np.float32))

    # audio [n, 1] in [-1, 1], stored as int16 PCM
    rate = STREAM_RATES["audio"]
    n = round(duration_s * rate)
    t = np.arange(n) / rate
    phi = shaft_angle(t)

    def background(f: np.ndarray) -> np.ndarray:
        pink = _unit_rms(1 / np.sqrt(1 + f / m.bg_knee))
        fan = _unit_rms(_resonance(f, m.fan_f, m.fan_q))
        return (m.bg_rms * pink + m.fan_rms * fan)[:, None]

    aud_impacts = None
    if impacts is not None:
        aud_impacts = (impacts[0], (3 + 3 * s) * m.bg_rms * impacts[1][:, None])
    a = _synth(rng, n, rate, 1, background, aud_impacts, m.aud_bear_f, m.aud_bear_q)[:, 0]
    boost = (2 + 2 * s) if cond == "imbalance" else 0.0
    a += m.hum[0] * (1 + boost) * np.sin(phi + rng.uniform(0, 2 * np.pi))
    a += m.hum[1] * (1 + boost / 2) * np.sin(2 * phi + rng.uniform(0, 2 * np.pi))
    a += m.mains_amp * np.sin(2 * np.pi * m.mains_f * t + rng.uniform(0, 2 * np.pi))
    pcm = np.clip(np.rint(a * m.mic_gain * 32768), -32768, 32767).astype(np.int16)
    t_ns, idx = _timestamps(rng, n, rate, offsets["audio"], start_ns, gaps=True)
    out["audio"] = (t_ns, pcm[idx, None])

    # environment [n, 2]: temperature degC, relative humidity %
    rate = STREAM_RATES["environment"]
    n = round(duration_s * rate)
    t = np.arange(n) / rate
    slope = rng.normal(0, 0.01) + ((0.1 + 0.3 * s) if cond == "overheating" else 0.0)
    hvac_amp, hvac_period = rng.uniform(0.1, 0.4), rng.uniform(60, 300)
    hvac = hvac_amp * np.sin(2 * np.pi * t / hvac_period + rng.uniform(0, 2 * np.pi))
    temp = m.temp0 + rng.normal(0, 1) + slope * t + hvac
    rh = m.rh0 * np.exp(-0.05 * (temp - temp[0]))
    env = np.stack([temp + rng.normal(0, 0.05, n), rh + rng.normal(0, 0.3, n)], axis=1)
    env = np.round(np.clip(env, [-40.0, 0.0], [125.0, 100.0]), 1)
    t_ns, idx = _timestamps(rng, n, rate, offsets["environment"], start_ns, gaps=False)
    out["environment"] = (t_ns, env[idx].astype(np.float32))

    # operator notes
    note_t = [rng.uniform(0, 0.5)]
    while (nxt := note_t[-1] + rng.uniform(8, 12)) < duration_s:
        note_t.append(nxt)
    notes = [(start_ns + offsets["notes"] + round(tt * 1e9), _note(rng, label)) for tt in note_t]
    return out, notes, offsets


def _write_run(
    folder: Path, streams: dict[str, tuple[np.ndarray, np.ndarray]], notes: list[tuple[int, str]]
) -> None:
    folder.mkdir()
    for stream, (t_ns, x) in streams.items():
        np.save(folder / f"{stream}_t.npy", t_ns)
        np.save(folder / f"{stream}_x.npy", x)
    with open(folder / "notes.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"t_ns": t, "text": text}) + "\n" for t, text in notes)


def generate(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    n_machines: int = 64,
    runs_per_machine: int = 2,
    duration_s: float = 30.0,
    progress: bool = True,
) -> Path:
    """Write the dataset (or reuse a complete copy) and return its folder.

    The folder is built under a temporary name and renamed into place once its completion
    marker is written, so concurrent or interrupted calls never expose a partial dataset.
    """
    if n_machines < 1 or runs_per_machine < 1 or duration_s <= 0:
        raise ValueError(
            f"need n_machines, runs_per_machine >= 1 and duration_s > 0; got {n_machines}, "
            f"{runs_per_machine}, {duration_s}"
        )
    duration = f"{float(duration_s):.12g}"
    name = f"machine-{VERSION}-s{seed}-m{n_machines}-r{runs_per_machine}-d{duration}"
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    final = root / "datasets" / name
    if (final / MARKER).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        rows = []
        total = n_machines * runs_per_machine
        with tqdm(total=total, desc=f"generating {name}", unit="run", disable=not progress) as bar:
            for k in range(n_machines):
                machine_id = f"m{k:03d}"
                seqs = np.random.SeedSequence([seed, k]).spawn(runs_per_machine + 1)
                machine = _draw_machine(np.random.default_rng(seqs[0]))
                for j, run_seq in enumerate(seqs[1:]):
                    i = k * runs_per_machine + j
                    run_id, label = f"{machine_id}-r{j}", DEAL_ORDER[i % len(DEAL_ORDER)]
                    start_ns = _EPOCH_NS + i * 3600 * 10**9
                    streams, notes, offsets = _run(
                        machine, np.random.default_rng(run_seq), label, duration_s, start_ns
                    )
                    _write_run(tmp / run_id, streams, notes)
                    rows.append(
                        [run_id, machine_id, CLASSES[label], duration, start_ns]
                        + [f"{offsets[c] / 1e9:.9f}" for c in CLOCKS]
                        + [run_id]
                    )
                    bar.update()
        with open(tmp / "runs.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            header = ["run_id", "machine_id", "label", "duration_s", "start_ns"]
            writer.writerow(header + [f"offset_{c}_s" for c in CLOCKS] + ["path"])
            writer.writerows(rows)
        (tmp / MARKER).write_text(f"machine {VERSION}\n", encoding="utf-8")
        try:
            tmp.rename(final)
        except OSError:  # another process won the race, or a stale partial folder is there
            if not (final / MARKER).exists():
                shutil.rmtree(final)
                tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def read_index(folder: str | Path) -> list[dict[str, str]]:
    """Rows of ``runs.csv`` as dicts of strings."""
    with open(Path(folder) / "runs.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _load_row(folder: Path, row: dict[str, str]) -> Recording:
    run_dir = folder / row["path"]
    streams = {}
    for name in STREAM_RATES:
        x = np.load(run_dir / f"{name}_x.npy")
        x = x.astype(np.float32) / 32768 if x.dtype == np.int16 else x
        streams[name] = (np.load(run_dir / f"{name}_t.npy"), x)
    with open(run_dir / "notes.jsonl", encoding="utf-8") as f:
        notes = [json.loads(line) for line in f]
    return Recording(
        run_id=row["run_id"],
        machine_id=row["machine_id"],
        label=CLASSES.index(row["label"]),
        streams=streams,
        notes=(np.array([n["t_ns"] for n in notes], np.int64), [n["text"] for n in notes]),
        offsets_s={c: float(row[f"offset_{c}_s"]) for c in CLOCKS},
        start_ns=int(row["start_ns"]),
    )


def load_run(folder: str | Path, run_id: str) -> Recording:
    """Read one raw run of a generated dataset folder."""
    for row in read_index(folder):
        if row["run_id"] == run_id:
            return _load_row(Path(folder), row)
    raise KeyError(f"run {run_id!r} is not in {Path(folder) / 'runs.csv'}")


def _resample(
    t_ns: np.ndarray, x: np.ndarray, grid: np.ndarray, rate: int, offset_s: float
) -> np.ndarray:
    """``x`` on ``grid`` (int64 ns): linear across gaps up to 2.5 periods, else the sample
    within half a period (the run's edges, just outside the first/last sample), else imputed.
    """
    period_ns, offset_ns = round(1e9 / rate), -round(offset_s * 1e9)
    linear = align(t_ns, x, grid, "linear", tolerance=5 * period_ns // 2, offset=offset_ns)
    near = align(t_ns, x, grid, "nearest", tolerance=period_ns // 2, offset=offset_ns)
    values = np.where(linear.mask[:, None], linear.values, near.values)
    filled, _ = impute(values, linear.mask | near.mask, strategy="linear")
    return filled.astype(np.float32)


def load_windows(
    folder: str | Path,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    env_lookback_s: float = 8.0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Align every run onto one timeline and cut windows ending every ``hop_s`` seconds.

    Per run, each stream's clock offset is subtracted and vibration, audio and environment are
    resampled with ``align(method="linear")`` onto their nominal grids from the run start
    (``start_ns``), bridging gaps up to 2.5 sample periods; grid points just outside the first
    or last sample take a sample within half a period (``"nearest"``), and what is still
    missing (wider gaps) is filled by linear imputation. The environment is interpolated too
    rather than carried forward (``"previous"``): temperature and humidity vary slowly and
    smoothly, and sample-and-hold would add a random 0-1 s lag (whether a grid point gets the
    current or the last reading flips with the timing jitter) that distorts the 8 s temperature
    slope that identifies ``overheating``; linear interpolation looks at most about one reading
    ahead, i.e. up to the window end. Each window gets the latest note at or before its end
    (``method="previous"`` on note indices). The first window ends
    ``max(window_s, env_lookback_s)`` s after the run start, so that every lookback lies inside
    the run, and the last one at or before the run's end.

    Returns ``vibration`` float32 [W, window_s * 1000, 3], ``audio`` float32
    [W, window_s * 8000], ``environment`` float32 [W, env_lookback_s, 2], ``notes`` object
    (str) [W], ``label`` int32 [W], ``machine_id`` and ``run_id`` str [W] and ``end_s``
    float64 [W] (window end, seconds since the run start).
    """
    folder = Path(folder)
    rows = read_index(folder)
    lookback = {"vibration": window_s, "audio": window_s, "environment": env_lookback_s}
    first_end = max(lookback.values())
    parts: dict[str, list[np.ndarray]] = {}
    for row in tqdm(rows, desc="windowing machine runs", unit="run", disable=not progress):
        rec = _load_row(folder, row)
        duration_ns = round(float(row["duration_s"]) * 1e9)
        start = rec.start_ns
        resampled = {}
        for name, rate in STREAM_RATES.items():
            t_ns, x = rec.streams[name]
            grid = fixed_rate_grid(start, start + duration_ns, rate)
            resampled[name] = (_resample(t_ns, x, grid, rate, rec.offsets_s[name]), rate)
        n_win = max(int(np.floor((duration_ns / 1e9 - first_end) / hop_s + 1e-9)) + 1, 0)
        end_s = first_end + hop_s * np.arange(n_win)
        windows = multirate_windows(resampled, end_s, lookback)
        note_t, texts = rec.notes
        note_offset = -round(rec.offsets_s["notes"] * 1e9)
        end_ns = start + np.rint(end_s * 1e9).astype(np.int64)
        latest = align(note_t, np.arange(len(texts)), end_ns, "previous", offset=note_offset)
        note_idx = np.where(latest.mask, np.nan_to_num(latest.values[:, 0]), -1).astype(int)
        per_run = {
            "vibration": windows["vibration"],
            "audio": windows["audio"][..., 0],
            "environment": windows["environment"],
            "notes": np.array([texts[i] if i >= 0 else "" for i in note_idx], dtype=object),
            "label": np.full(n_win, rec.label, np.int32),
            "machine_id": np.full(n_win, rec.machine_id),
            "run_id": np.full(n_win, rec.run_id),
            "end_s": end_s,
        }
        for key, value in per_run.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def _fold_masks(groups: np.ndarray, strata: np.ndarray, test: np.ndarray, val_fold: int,
                val_folds: int, seed: int) -> dict[str, np.ndarray]:
    """Train/val/test masks: ``test`` kept, fold ``val_fold`` of the other groups is val."""
    if val_folds < 2 or not 0 <= val_fold < val_folds:
        raise ValueError(f"need val_folds >= 2 and 0 <= val_fold < val_folds; got val_fold="
                         f"{val_fold}, val_folds={val_folds}")
    rest = ~test
    folds = group_split(groups[rest], {str(i): 1.0 for i in range(val_folds)}, seed=seed,
                        strata=strata[rest])
    val = np.zeros_like(test)
    val[rest] = folds[str(val_fold)]
    return {"train": rest & ~val, "val": val, "test": test}


def load(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    n_machines: int = 64,
    runs_per_machine: int = 2,
    duration_s: float = 30.0,
    window_s: float = 1.0,
    hop_s: float = 1.0,
    env_lookback_s: float = 8.0,
    split_seed: int = 0,
    val_fold: int | None = None,
    val_folds: int = 4,
    vibration_standardize: str = "bin",
    audio_kurtosis_bands: list[list[float]] | None = None,
    strict: bool = False,
    progress: bool = True,
) -> MultimodalDataset:
    """Generate (or reuse) the dataset, window it and split it 60/20/20 by machine.

    The split is :func:`~mmkeras.data.splits.group_split` over ``machine_id`` stratified by
    the label of each machine's first run. ``val_fold`` (``0 <= val_fold < val_folds``) keeps
    the same test machines and deals the other machines, stratified the same way, into
    ``val_folds`` groups: group ``val_fold`` is validation, the rest train (machine-grouped
    cross-validation that never touches the test split; ``None``: the 60/20/20 split).
    ``vibration_standardize`` is the vibration spectrogram's standardisation: ``"bin"`` (one
    mean and std per axis and frequency bin) or ``"channel"`` (per axis, over all its bins:
    keeps the spectrum's shape for ``spectrogram_cnn``'s ``spectral_peaks``).
    ``audio_kurtosis_bands`` (``[[low, high], ...]`` Hz) appends each band's clip kurtosis to
    the audio features (:class:`~mmkeras.data.audio.LogMelAndKurtosis`: a bearing's impacts).
    Modalities: ``vibration`` [window_s * 1000, 3] and ``environment`` [env_lookback_s, 2]
    time series, ``audio`` [window_s * 8000] and ``notes`` text; the splits also hold
    ``machine_id``, ``run_id`` and ``end_s``. ``strict`` is accepted for the common ``load()``
    interface: generated data has no bad records to quarantine.
    """
    folder = generate(cache_dir, seed, n_machines, runs_per_machine, duration_s, progress)
    windows = load_windows(folder, window_s, hop_s, env_lookback_s, progress)
    first_label: dict[str, int] = {}
    for row in read_index(folder):
        first_label.setdefault(row["machine_id"], CLASSES.index(row["label"]))
    strata = np.array([first_label[m] for m in windows["machine_id"]])
    masks = group_split(windows["machine_id"], SPLIT_FRACTIONS, seed=split_seed, strata=strata)
    if val_fold is not None:
        masks = _fold_masks(windows["machine_id"], strata, masks["test"], val_fold, val_folds,
                            split_seed)
    splits = {name: {k: v[mask] for k, v in windows.items()} for name, mask in masks.items()}
    check_not_empty(splits, folder)  # e.g. too few machines for three splits
    modalities = {
        "vibration": ModalitySpec(
            "vibration",
            "timeseries",
            windows["vibration"].shape[1:],
            options={
                "rate_hz": STREAM_RATES["vibration"],
                "channels": ["x", "y", "z"],
                "spectrogram": {"n_fft": 256, "hop_length": 64,
                                "standardize": vibration_standardize},
            },
        ),
        "audio": ModalitySpec(
            "audio",
            "audio",
            windows["audio"].shape[1:],
            options={
                "sample_rate": STREAM_RATES["audio"],
                "n_fft": 256,
                "hop_length": 128,
                "n_mels": 40,
                **({"kurtosis_bands": audio_kurtosis_bands} if audio_kurtosis_bands else {}),
            },
        ),
        "environment": ModalitySpec(
            "environment",
            "timeseries",
            windows["environment"].shape[1:],
            options={
                "rate_hz": STREAM_RATES["environment"],
                "channels": ["temperature_c", "humidity_pct"],
                "differences": True,
            },
        ),
        "notes": ModalitySpec("notes", "text", (), "string"),
    }
    info = {
        "folder": str(folder),
        "machines": {name: sorted(set(a["machine_id"])) for name, a in splits.items()},
    }
    return MultimodalDataset("machine", modalities, list(CLASSES), splits, info)
