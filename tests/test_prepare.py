"""``python -m mmkeras.prepare`` (Apache Beam) against the in-memory path, and training from it.

Real data: avdigits' FSDD WAVs with its MNIST images written out as PNGs, and MobiFall trials
written as stream files; each is prepared on the DirectRunner and compared example by example
and statistic by statistic with the in-memory dataset and ``fit_preprocessing``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mmkeras.data.beam_prepare import LOCAL_OPTIONS, prepare
from mmkeras.data.dataset import MultimodalDataset
from mmkeras.data.manifest import read_manifest
from mmkeras.data.prepare_schema import PrepareSchema, SchemaError, load_schema
from mmkeras.data.prepared import PreparedDataset
from mmkeras.data.preprocessing import fit_preprocessing
from mmkeras.data.quarantine import EmptyDataError

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
AV_SCHEMA = {
    "name": "avdigits_manifest",
    "modalities": {
        "audio": {"kind": "audio", "shape": [8000], "sample_rate": 8000,
                  "options": {"n_fft": 256, "hop_length": 128, "n_mels": 40}},
        "image": {"kind": "image", "shape": [28, 28, 1]},
    },
    "label": {"column": "digit", "classes": list(range(10))},
    "split": {"column": "speaker", "fractions": {"train": 1.0, "val": 0.0, "test": 0.0},
              "assign": {"val": ["theo"], "test": ["yweweler"]}},
}
MOBIFALL_SCHEMA = """
name: mobifall_manifest
modalities:
  acc: {kind: stream, channels: 3, align: {method: linear, tolerance: 5e-2}}
  gyro: {kind: stream, channels: 3, align: {method: nearest, tolerance: 5e-3}}
  ori: {kind: stream, channels: 4, align: {method: nearest, tolerance: 0.005}}
label: {column: activity, classes: [BSC, CSI, CSO, FKL, FOL, JOG, JUM, SCH, SDL, STN, STU]}
split:
  column: subject
  fractions: {train: 1, val: 0, test: 0}
  assign: {val: [3], test: [4]}
timeline: {rate_hz: 200, time_unit: ns}
window: {length_s: 2.0, hop_s: 1.0, min_presence: 0.8}
"""


def _assert_state_close(prepared: dict, fitted: dict) -> None:
    assert prepared.keys() == fitted.keys()
    for name, state in fitted.items():
        got, want = prepared[name]["standardizer"], state["standardizer"]
        assert got["method"] == want["method"]
        np.testing.assert_allclose(got["center"], want["center"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["scale"], want["scale"], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ the schema
def test_schema_errors_name_the_field_and_the_nearest_name(tmp_path: Path) -> None:
    good = {**AV_SCHEMA, "modalities": {"x": {"kind": "stream", "channels": 3,
                                               "align": {"method": "linear", "tolerance": "1e-3"}}},
            "timeline": {"rate_hz": 100}, "window": {"length_s": 1.0, "hop_s": 0.5}}
    schema = PrepareSchema.model_validate(good)  # "1e-3" (YAML 1.1 reads a string) is a number
    assert schema.modalities["x"].align.tolerance == 0.001
    assert schema.shape("x") == (100, 3) and schema.steps("hop_s") == 50

    def error(text: str) -> str:
        path = tmp_path / "schema.yaml"
        path.write_text(text)
        with pytest.raises(SchemaError) as err:
            load_schema(path)
        return str(err.value)

    base = "label: {column: y, classes: [a, b]}\nsplit: {column: g, fractions: {train: 0.8, " \
           "val: 0.1, test: 0.1}}\n"
    message = error(base + "modalities: {x: {kind: stream, shape: [4, 2], align: {method: "
                           "lienar}}}\n")
    assert "modalities.x.align.method" in message and "did you mean 'linear'" in message
    message = error(base + "modalities: {x: {kind: audio, shape: [80], sample_rte: 8000}}\n")
    assert "modalities.x" in message and "did you mean 'sample_rate'" in message
    message = error(base + "modalities: {x: {kind: numeric}}\nwindow: {length_s: 1, hop_s: 1}\n")
    assert "timeline and window go together" in message
    message = error("label: {column: y, classes: [a]}\nsplit: {column: g, fractions: {train: 1,"
                    " vall: 0, test: 0}}\nmodalities: {x: {kind: numeric}}\n")
    assert "split" in message and "did you mean 'val'" in message
    assert "schema.yaml:2:1: YAML syntax error" in error("modalities: [\n")
    example = load_schema(Path(__file__).parents[1] / "data_pipelines/schemas/example.yaml")
    assert example.split_of("4") == "test" and example.modalities["gyro"].align.tolerance == 0.005


def test_split_is_by_group_hash_not_by_row() -> None:
    schema = PrepareSchema.model_validate(AV_SCHEMA | {"split": {
        "column": "g", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}}})
    splits = [schema.split_of(f"subject{i}") for i in range(2000)]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.6) < 0.04 and abs(shares["test"] - 0.2) < 0.04
    assert splits == [schema.split_of(f"subject{i}") for i in range(2000)]  # deterministic
    assert schema.split_of(3) == schema.split_of("3")


# ------------------------------------------------------------------------------ avdigits
@pytest.fixture(scope="module")
def avdigits_manifest(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 clips per digit and speaker (120 rows) of avdigits' pairing, MNIST images as PNGs."""
    from data_pipelines import avdigits

    folder = tmp_path_factory.mktemp("avdigits_manifest")
    recordings, pairs, images = avdigits._pairs_and_images()
    rows = []
    for split_pairs in pairs.values():
        for pair in split_pairs:
            if int(Path(pair.file).stem.split("_")[2]) >= 2:
                continue
            png = folder / "images" / f"{pair.mnist_index}.png"
            png.parent.mkdir(exist_ok=True)
            tf.io.write_file(str(png), tf.io.encode_png(images[pair.mnist_index]))
            rows.append({"audio_path": str(recordings / pair.file),
                         "image_path": f"images/{png.name}", "digit": pair.digit,
                         "speaker": pair.speaker})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def avdigits_prepared(avdigits_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("avdigits_prepared") / "out"
    prepare(avdigits_manifest, PrepareSchema.model_validate(AV_SCHEMA), out, IN_PROCESS)
    return out


def test_avdigits_shards_and_statistics_equal_the_in_memory_path(
    avdigits_manifest: Path, avdigits_prepared: Path
) -> None:
    from data_pipelines import avdigits

    memory = avdigits.load()
    manifest = pd.read_csv(avdigits_manifest)
    prepared = PreparedDataset(avdigits_prepared)
    assert prepared.counts == {"train": 80, "val": 20, "test": 20}
    for split in ("train", "val", "test"):
        arrays = prepared.splits[split]
        files = [Path(manifest.loc[r, "audio_path"]).name for r in arrays["row"]]
        index = {f: i for i, f in enumerate(memory.splits[split]["file"])}
        rows = [index[f] for f in files]  # KeyError: an example in the wrong split
        np.testing.assert_array_equal(arrays["audio"], memory.splits[split]["audio"][rows])
        np.testing.assert_array_equal(arrays["image"], memory.splits[split]["image"][rows])
        np.testing.assert_array_equal(arrays["label"], memory.splits[split]["label"][rows])
        assert sorted(set(arrays["group"])) == sorted(set(memory.splits[split]["speaker"][rows]))
    train = prepared.splits["train"]
    subset = MultimodalDataset("x", memory.modalities, memory.class_names,
                               {"train": {k: train[k] for k in ("audio", "image", "label")}})
    _assert_state_close(prepared.info["preprocessing"], fit_preprocessing(subset))
    card = json.loads((avdigits_prepared / "dataset.json").read_text())
    assert card["bad_rows"] == 0 and card["modalities"]["audio"]["options"]["n_mels"] == 40


def test_multi_process_runner_writes_the_same_files(
    avdigits_manifest: Path, avdigits_prepared: Path, tmp_path: Path
) -> None:
    """The local default (2 worker processes) gives byte-identical shards and statistics, here
    with the manifest and the output given as ``file://`` URLs: the workers then read the
    images and write every part and shard through TensorFlow's file systems, as on Dataflow."""
    out = tmp_path / "out"
    prepare(f"file://{avdigits_manifest}", PrepareSchema.model_validate(AV_SCHEMA),
            f"file://{out}", LOCAL_OPTIONS)
    for split in ("train", "val", "test"):
        ours = json.loads((out / split / "schema.json").read_text())
        theirs = json.loads((avdigits_prepared / split / "schema.json").read_text())
        assert ours == theirs  # every shard's sha256 included
    _assert_state_close(json.loads((out / "preprocessing.json").read_text()),
                        json.loads((avdigits_prepared / "preprocessing.json").read_text()))
    card = json.loads((out / "dataset.json").read_text())
    assert card["manifest"] == f"file://{avdigits_manifest}" and not (out / ".parts").exists()


def test_bucket_manifest_files_and_output_give_the_same_dataset(
    avdigits_manifest: Path, avdigits_prepared: Path
) -> None:
    """Manifest, audio, images and output in a bucket (TensorFlow's in-memory ``ram://`` file
    system, which the operating system cannot see): the same shards and statistics as on local
    disk, and training batches stream from the bucket."""
    gfile = tf.io.gfile
    bucket = "ram://avdigits-bucket"
    manifest = pd.read_csv(avdigits_manifest)
    for column in ("audio_path", "image_path"):
        for i, name in enumerate(manifest[column]):
            local = Path(name) if Path(name).is_absolute() else avdigits_manifest.parent / name
            relative = f"{column.removesuffix('_path')}/{local.name}"
            gfile.makedirs(f"{bucket}/{column.removesuffix('_path')}")
            with gfile.GFile(f"{bucket}/{relative}", "wb") as f:
                f.write(local.read_bytes())
            manifest.loc[i, column] = relative  # relative to the manifest, as users write them
    with gfile.GFile(f"{bucket}/manifest.csv", "w") as f:
        f.write(manifest.to_csv(index=False))

    card = prepare(f"{bucket}/manifest.csv", PrepareSchema.model_validate(AV_SCHEMA),
                   f"{bucket}/prepared", IN_PROCESS)
    assert card["num_examples"] == {"train": 80, "val": 20, "test": 20}
    assert card["manifest"] == f"{bucket}/manifest.csv"
    for split in ("train", "val", "test"):
        with gfile.GFile(f"{bucket}/prepared/{split}/schema.json") as f:
            ours = json.loads(f.read())
        assert ours == json.loads((avdigits_prepared / split / "schema.json").read_text())
    with gfile.GFile(f"{bucket}/prepared/preprocessing.json") as f:
        _assert_state_close(json.loads(f.read()),
                            json.loads((avdigits_prepared / "preprocessing.json").read_text()))
    assert not gfile.exists(f"{bucket}/prepared/.parts") and not Path("ram:").exists()

    remote = PreparedDataset(f"{bucket}/prepared")
    local = PreparedDataset(avdigits_prepared)
    assert remote.counts == local.counts and len(remote.info["quarantine"]) == 0
    for (x, y), (x0, y0) in zip(remote.stream("val", 8), local.stream("val", 8), strict=True):
        np.testing.assert_array_equal(y, y0)
        for name in ("audio", "image"):
            np.testing.assert_array_equal(x[name], x0[name])
    gfile.rmtree(bucket)


# ------------------------------------------------------------------------------ mobifall
def test_mobifall_windows_and_statistics_equal_the_in_memory_path(
    data_dir: Path, tmp_path: Path
) -> None:
    from data_pipelines import mobifall

    real = data_dir / mobifall.SUBDIR
    trials = [t for s in (2, 3, 4) for t in
              [t for t in mobifall.find_trials(real) if t.subject == s][:2]]
    root, streams = tmp_path / "root", tmp_path / "streams"
    rows = []
    for n, trial in enumerate(trials):
        row = {"activity": trial.code, "subject": trial.subject}
        for sensor, path in trial.paths.items():
            link = root / path.relative_to(real)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
            t_ns, values, _ = mobifall.read_sensor_file(path)
            with np.errstate(invalid="ignore"):
                values = np.where(np.abs(values) > mobifall.MAX_ABS_VALUE, np.nan, values)
            if sensor == "ori":
                values = mobifall.encode_orientation(values)
            stream = streams / f"{n}_{sensor}.npy"
            stream.parent.mkdir(exist_ok=True)
            np.save(stream, np.column_stack([t_ns.astype(np.float64), values]))
            row[f"{sensor}_path"] = f"streams/{stream.name}"
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "schema.yaml").write_text(MOBIFALL_SCHEMA)

    memory = mobifall.load(root=root, verbose=False)
    prepare(tmp_path / "manifest.csv", tmp_path / "schema.yaml", tmp_path / "out", IN_PROCESS)
    prepared = PreparedDataset(tmp_path / "out")
    for split in ("train", "val", "test"):
        arrays, want = prepared.splits[split], memory.splits[split]
        assert len(arrays["label"]) == len(want["label"]) > 0
        keys = [(trials[r].file, round(s, 6)) for r, s in zip(arrays["row"], arrays["start_s"],
                                                                strict=True)]
        index = {(f, round(float(s), 6)): i for i, (f, s) in
                 enumerate(zip(want["file"], want["start_s"], strict=True))}
        rows = [index[k] for k in keys]
        assert sorted(rows) == list(range(len(want["label"])))  # the same windows, no more
        for sensor in ("acc", "gyro", "ori"):
            np.testing.assert_allclose(arrays[sensor], want[sensor][rows], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(arrays["label"], want["label"][rows])
    _assert_state_close(prepared.info["preprocessing"], fit_preprocessing(memory))
    windows = json.loads((tmp_path / "out" / "dataset.json").read_text())["windows"]
    assert windows["windows_kept"] == memory.info["windows"]["kept"]
    assert windows["windows_dropped_low_presence"] == memory.info["windows"]["dropped_low_presence"]
    ranges = prepared.info["ranges"]["acc"]
    train_acc = memory.splits["train"]["acc"].reshape(-1, 3)
    np.testing.assert_allclose(ranges["low"], train_acc.min(axis=0), rtol=1e-6)


# ------------------------------------------------------------------------------ quarantine
def test_quarantine_report_equals_the_manifest_reader(data_dir: Path, tmp_path: Path) -> None:
    wavs = sorted((data_dir / "fsdd/recordings").glob("*_theo_*.wav"))[:6]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (tmp_path / "truncated.wav").write_bytes(wavs[0].read_bytes()[:30])
    t = np.arange(0.0, 2.0, 0.01)
    good = np.column_stack([t, np.sin(t), np.cos(t)])
    np.savetxt(tmp_path / "good.csv", good, delimiter=",", header="t,a,b", comments="")
    unsorted = good.copy()
    unsorted[[50, 51]] = unsorted[[51, 50]]
    np.savetxt(tmp_path / "unsorted.csv", unsorted, delimiter=",")
    rows = [
        (wavs[0], "good.csv", 0, "theo", "1.5"),
        ("corrupt.wav", "good.csv", 1, "theo", ""),
        (wavs[1], "unsorted.csv", 2, "theo", "2"),
        ("missing.wav", "good.csv", 3, "george", "1"),
        (wavs[2], "good.csv", 11, "george", ""),       # unknown label
        ("truncated.wav", "good.csv", 4, "george", "1"),
        (wavs[3], "good.csv", 5, "", "1"),            # no group
        (wavs[4], "good.csv", 6, "lucas", "abc"),     # optional, present but not a number
        (wavs[5], "good.csv", 7, "lucas", ""),        # optional numeric absent: kept
    ]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["speech_path", "accel_path", "accel_start_s", "accel_end_s", "digit",
                         "speaker", "age"])
        for wav, stream, digit, speaker, age in rows:
            writer.writerow([wav, stream, 0.5, 1.5, digit, speaker, age])
    schema = PrepareSchema.model_validate({
        "modalities": {
            "speech": {"kind": "audio", "shape": [4000], "sample_rate": 8000},
            "accel": {"kind": "stream", "shape": [20, 2]},
            "age": {"kind": "numeric", "required": False},
        },
        "label": {"column": "digit", "classes": list(range(10))},
        "split": {"column": "speaker", "fractions": {"train": 1, "val": 0, "test": 0},
                  "assign": {"val": ["george"], "test": ["theo"]}},
    })
    _, expected = read_manifest(manifest, schema.manifest_schema())
    with pytest.raises(EmptyDataError, match="split 'val' has no examples"):
        prepare(manifest, schema, tmp_path / "out", IN_PROCESS)  # george's rows are all bad
    report = pd.read_csv(tmp_path / "out" / "quarantine.csv", keep_default_na=False)
    got = list(zip(report["record"], report["reason"], strict=True))
    group_row = (f"{manifest}:row 6", "missing value: group column 'speaker' is empty")
    assert got == sorted([*expected.records, group_row], key=lambda r: int(
        r[0].split(":row ")[1].split()[0]))
    reasons = " | ".join(r for _, r in got)
    for kind in ("bad audio", "non-monotonic timestamps", "missing file", "unknown label",
                 "not a number"):
        assert kind in reasons
    train = json.loads((tmp_path / "out" / "train" / "schema.json").read_text())
    assert train["num_examples"] == 1 and "age_present" in train["features"]
    from mmkeras.data.tfrecord import read_tfrecords

    (example,) = list(read_tfrecords(tmp_path / "out" / "train").as_numpy_iterator())
    assert example["row"] == 8 and example["age_present"].tolist() == [0.0]
    assert example["age"].tolist() == [0.0] and example["accel"].shape == (20, 2)


# ------------------------------------------------------------------------------ training
def test_train_dataset_prepared_streams_and_exports(avdigits_prepared: Path, tmp_path: Path,
                                                    cache_dir: Path) -> None:
    from mmkeras.config import resolve_config
    from mmkeras.training.trainer import train

    cfg = resolve_config(None, [  # the folder as a URL: read through TensorFlow's file systems
        "dataset=prepared", f"dataset_args.path=file://{avdigits_prepared}", "epochs=1",
        "batch_size=16", "verbose=0", "embed_dim=16", f"output={tmp_path / 'run'}",
        "strategy=default",
    ])
    result = train(cfg)
    assert (result.export_dir / "saved_model.pb").is_file()
    run_state = json.loads((result.run_dir / "preprocessing.json").read_text())
    assert run_state == json.loads((avdigits_prepared / "preprocessing.json").read_text())
    assert result.metrics["train_examples"] == 80
    card = json.loads((result.run_dir / "dataset.json").read_text())
    assert card["name"] == "avdigits_manifest" and card["class_names"][3] == "3"
    assert json.loads((result.run_dir / "export_validation.json").read_text())["ok"]
    assert os.path.getsize(result.run_dir / "quarantine.csv") > 0


# ------------------------------------------------------------------------------ text, CLI
def test_cli_text_vocabulary_and_numeric_statistics_equal_fit_preprocessing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Through the command line (Beam options passed through), from a JSONL manifest."""
    from mmkeras.data.dataset import ModalitySpec
    from mmkeras.prepare import main

    rng = np.random.default_rng(0)
    words = ["Alpha", "beta,", "GAMMA", "delta!", "eps", "zeta", "eta's", "theta"]
    rows = [{"note": " ".join(rng.choice(words, size=rng.integers(1, 6))),
             "dose": float(rng.normal(5, 2)), "y": ["no", "yes"][i % 2], "site": f"s{i % 7}"}
            for i in range(60)]
    with (tmp_path / "m.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "schema.yaml").write_text(
        "modalities:\n  note: {kind: text, options: {max_tokens: 6, sequence_length: 8}}\n"
        "  dose: {kind: numeric}\nlabel: {column: y, classes: ['no', 'yes']}\n"
        "split: {column: site, fractions: {train: 0.6, val: 0.2, test: 0.2}}\n")
    args = ["--manifest", str(tmp_path / "m.jsonl"), "--schema", str(tmp_path / "schema.yaml"),
            "--num-shards", "2", *IN_PROCESS]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "bad row(s)" in capsys.readouterr().out
    prepared = PreparedDataset(tmp_path / "out")
    train = prepared.splits["train"]
    sites = sorted(set(train["group"]))
    assert sites == sorted({r["site"] for r in rows if prepared_split(r["site"]) == "train"})
    mine = [r for r in rows if r["site"] in sites]
    memory = MultimodalDataset("x", {
        "note": ModalitySpec("note", "text", (), "string", {"max_tokens": 6,
                                                            "sequence_length": 8}),
        "dose": ModalitySpec("dose", "tabular", (1,)),
    }, ["no", "yes"], {"train": {"note": np.array([r["note"] for r in mine], object),
                                 "dose": np.array([[r["dose"]] for r in mine], np.float32)}})
    fitted = fit_preprocessing(memory)
    state = prepared.info["preprocessing"]
    assert state["note"] == fitted["note"] and len(state["note"]["vocabulary"]) == 4
    _assert_state_close({"dose": state["dose"]}, {"dose": fitted["dose"]})
    assert main([*args, "--out", str(tmp_path / "out")]) == 1  # not empty
    assert "is not empty" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("modalities: {note: {kind: txt}}\n")
    assert main([*args[:2], "--schema", str(tmp_path / "bad.yaml"), "--out",
                 str(tmp_path / "o2")]) == 1
    assert "modalities.note.kind" in capsys.readouterr().err


def prepared_split(site: str) -> str:
    schema = PrepareSchema.model_validate({
        "modalities": {"dose": {"kind": "numeric"}}, "label": {"column": "y", "classes": [0]},
        "split": {"column": "site", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}}})
    return schema.split_of(site)


def test_streaming_split_is_never_held_in_memory(avdigits_prepared: Path) -> None:
    """The training input pipeline reads shards: no cache, no split-sized constant, a bounded
    shuffle buffer; its batches are the preprocessed features."""
    from mmkeras.models.preprocessor import MultimodalPreprocessor, spec_to_dict
    from mmkeras.training.trainer import feature_dataset

    dataset = PreparedDataset(avdigits_prepared, shuffle_buffer=32)
    preprocessor = MultimodalPreprocessor(
        {n: spec_to_dict(s) for n, s in dataset.modalities.items()},
        dataset.info["preprocessing"])
    ds = feature_dataset(preprocessor, dataset, "train", 16, None, shuffle=True, seed=1)
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    ops = {node.op for node in graph.node}
    inner = {n.op for f in graph.library.function for n in f.node_def}  # inside interleave
    assert "ParallelInterleaveDatasetV4" in ops and "TFRecordDataset" in inner
    assert not {op for op in ops if op.startswith("CacheDataset")}
    assert graph.ByteSize() < 200_000  # 80 clips of 8000 float32 alone would be 2.5 MB
    buffers = [n for n in graph.node if n.op.startswith("ShuffleDataset")]
    sizes = {int(tf.make_ndarray(m.attr["value"].tensor)) for n in buffers for m in graph.node
             if m.name == n.input[1]}
    assert 32 in sizes and max(sizes) <= 32
    features, targets = next(iter(ds))
    assert features["audio"].shape[0] == 16 and features["audio"].shape[-1] == 40
    assert targets["probabilities"].dtype == tf.int32
    assert not dataset.splits["train"]._arrays  # nothing was loaded into memory
    audio_only = dataset.select(["audio"])
    inputs, label = next(iter(audio_only.stream("val", 4)))
    assert list(inputs) == ["audio"] and list(audio_only.info["preprocessing"]) == ["audio"]
    assert label.shape == (4,) and audio_only.num_examples("val") == 20


def test_windowed_recordings_with_an_optional_stream_and_a_row_value(tmp_path: Path) -> None:
    """Float-second streams: the optional one absent in a row (zeros, present 0), a per-row
    number repeated in every window, a recording with unsorted timestamps quarantined."""
    from mmkeras.data.align import align, fixed_rate_grid
    from mmkeras.data.windowing import sliding_windows

    rng = np.random.default_rng(0)
    t_a = np.sort(rng.uniform(0.0, 4.0, 200))
    a = np.column_stack([t_a, np.sin(3 * t_a), t_a ** 2])
    t_b = np.arange(0.1, 3.9, 0.05)
    b = np.column_stack([t_b, np.cos(t_b)])
    np.savetxt(tmp_path / "a.csv", a, delimiter=",")
    np.savetxt(tmp_path / "b.csv", b, delimiter=",")
    np.savetxt(tmp_path / "a_unsorted.csv", a[::-1], delimiter=",")
    pd.DataFrame({"a_path": ["a.csv", "a.csv", "a_unsorted.csv"], "b_path": ["b.csv", "", ""],
                  "age": ["31", "47", "50"], "y": ["walk", "run", "walk"],
                  "who": ["p1", "p2", "p3"]}).to_csv(tmp_path / "m.csv", index=False)
    schema = PrepareSchema.model_validate({
        "modalities": {
            "a": {"kind": "stream", "channels": 2, "align": {"method": "linear"}},
            "b": {"kind": "stream", "channels": 1, "required": False,
                  "align": {"method": "nearest", "tolerance": 0.03}, "impute": "zero"},
            "age": {"kind": "numeric"},
        },
        "label": {"column": "y", "classes": ["walk", "run"]},
        "split": {"column": "who", "fractions": {"train": 1, "val": 0, "test": 0},
                  "assign": {"val": ["p2"], "test": ["p3"]}},
        "timeline": {"rate_hz": 10}, "window": {"length_s": 1.0, "hop_s": 0.5},
    })
    with pytest.raises(EmptyDataError, match="split 'test'"):
        prepare(tmp_path / "m.csv", schema, tmp_path / "out", IN_PROCESS)
    report = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert report["record"].tolist() == [f"{tmp_path / 'm.csv'}:row 2 "
                                         f"({tmp_path / 'a_unsorted.csv'})"]
    assert report["reason"][0].startswith("non-monotonic timestamps: row 1")

    from mmkeras.data.tfrecord import read_tfrecords

    def examples(split: str) -> dict[str, np.ndarray]:
        batches = list(read_tfrecords(tmp_path / "out" / split, batch_size=1000)
                       .as_numpy_iterator())
        return batches[0]

    # row 0: both streams, on the grid over their common span
    start, stop = max(t_a[0], t_b[0]), min(t_a[-1], t_b[-1])
    grid = fixed_rate_grid(float(start), float(np.nextafter(stop, np.inf)), 10)
    want_a = sliding_windows(align(t_a, a[:, 1:], grid, "linear").values, 10, 5)
    nearest = align(t_b, b[:, 1:], grid, "nearest", tolerance=0.03)
    want_b = sliding_windows(np.where(nearest.mask[:, None], nearest.values, 0.0), 10, 5)
    train = examples("train")
    order = np.argsort(train["start_s"])
    np.testing.assert_allclose(train["a"][order], want_a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(train["b"][order], want_b, rtol=1e-6, atol=1e-6)
    assert (train["b_present"] == 1).all() and (train["age"] == 31).all()
    # row 1: b absent: the timeline is a's alone
    val = examples("val")
    grid = fixed_rate_grid(float(t_a[0]), float(np.nextafter(t_a[-1], np.inf)), 10)
    assert len(val["a"]) == len(sliding_windows(grid, 10, 5))
    assert (val["b_present"] == 0).all() and not val["b"].any() and (val["age"] == 47).all()
    assert (val["label"] == 1).all()


def test_prepare_inside_ipython_runs_in_a_child_with_the_same_files(tmp_path: Path) -> None:
    """Under IPython (Jupyter) Beam 2.77 imports its interactive module, which fails with
    pandas 3: ``prepare`` then runs the same pipeline in a child process. Same files as outside
    IPython; a data error comes back as a ValueError with the command's one-line message."""
    t = np.arange(0.0, 3.0, 0.01)
    np.savetxt(tmp_path / "s.csv", np.column_stack([t, np.sin(t)]), delimiter=",")
    pd.DataFrame({"s_path": ["s.csv"] * 3, "y": ["a", "b", "a"], "who": ["p1", "p2", "p3"]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    schema = {"modalities": {"s": {"kind": "stream", "channels": 1, "align": {"method": "linear"}}},
              "label": {"column": "y", "classes": ["a", "b"]},
              "split": {"column": "who", "fractions": {"train": 1, "val": 0, "test": 0},
                        "assign": {"val": ["p2"], "test": ["p3"]}},
              "timeline": {"rate_hz": 20}, "window": {"length_s": 1.0, "hop_s": 0.5}}
    empty_test = {**schema, "split": {**schema["split"], "assign": {"val": ["p2"],
                                                                    "test": ["nobody"]}}}
    code = f"""
from mmkeras.data.beam_prepare import prepare
from mmkeras.data.prepare_schema import PrepareSchema
card = prepare({str(tmp_path / "m.csv")!r}, PrepareSchema.model_validate({schema!r}),
               {str(tmp_path / "ipy")!r}, {IN_PROCESS!r})
print("COUNTS", card["num_examples"])
try:
    prepare({str(tmp_path / "m.csv")!r}, PrepareSchema.model_validate({empty_test!r}),
            {str(tmp_path / "ipy_bad")!r}, {IN_PROCESS!r})
except ValueError as err:
    print("ERROR", err)
"""
    done = subprocess.run([sys.executable, "-m", "IPython", "--colors=nocolor", "-c", code],
                          capture_output=True, text=True, timeout=900, check=False)
    assert "COUNTS {'train': 5, 'val': 5, 'test': 5}" in done.stdout, done.stdout + done.stderr
    assert "ERROR " in done.stdout and "split 'test' has no examples" in done.stdout
    prepare(tmp_path / "m.csv", PrepareSchema.model_validate(schema), tmp_path / "plain",
            IN_PROCESS)
    for split in ("train", "val", "test"):  # schema.json holds every shard's sha256
        assert ((tmp_path / "ipy" / split / "schema.json").read_text()
                == (tmp_path / "plain" / split / "schema.json").read_text())
    assert not (tmp_path / "ipy" / ".parts").exists()


def test_prepared_dataset_errors_say_what_to_do(tmp_path: Path) -> None:
    from data_pipelines import load_dataset
    from mmkeras.data.quarantine import DataError

    with pytest.raises(DataError, match=r"needs dataset_args\.path=DIR"):
        load_dataset("prepared")
    with pytest.raises(DataError, match=r"not a prepared folder.*python -m mmkeras\.prepare"):
        load_dataset("prepared", path=str(tmp_path))
