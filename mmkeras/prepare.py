"""Command line: ``python -m mmkeras.prepare --manifest FILE --schema SCHEMA.yaml --out DIR``.

Turns a manifest of your own recordings into prepared, sharded TFRecords and the training
split's preprocessing statistics with an Apache Beam pipeline
(:mod:`mmkeras.data.beam_prepare`); then ``python -m mmkeras.train dataset=prepared
dataset_args.path=DIR`` trains from the shards. Every option this command does not know is a
Beam pipeline option, passed through unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mmkeras.cli import Parser, drop_chatter, native_stderr, one_line, positive_int

EPILOG = """\
manifest columns (one row per example, or per recording with a windowed schema):
  <name>_path                 audio, image and stream files (relative to the manifest)
  <name>_start_s, <name>_end_s  a stream window per row (schemas without a window)
  <name> / <name>_0..         text and numeric values
  the label column and the group column named in the schema

Beam pipeline options (anything else on the command line; default: the local DirectRunner
with --direct_num_workers=2 --direct_running_mode=multi_processing
--default_sdk_harness_log_level=WARNING):
  --runner=DirectRunner --direct_num_workers=4 --direct_running_mode=multi_processing
  --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=LOOPBACK
  --runner=SparkRunner --spark_master_url=spark://HOST:7077
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
      --extra_package=dist/mmkeras-<version>-py3-none-any.whl
      (needs pip install "apache-beam[gcp]"; build the wheel with
      pip wheel --no-deps -w dist . in the repository; see the README)
  (the manifest, its files and --out may be URLs: gs://, hdfs://, file://, read and written
  through TensorFlow's file systems; on a cluster they must be reachable from every worker:
  a bucket, or a file system every worker mounts)

examples:
  python -m mmkeras.prepare --manifest recordings.csv --schema schema.yaml --out prepared/
  python -m mmkeras.prepare --manifest gs://B/recordings.csv --schema schema.yaml \
      --out gs://B/prepared/ --runner=DataflowRunner ...   (see above)
  python -m mmkeras.train dataset=prepared dataset_args.path=prepared/ epochs=5

outputs in --out: train/ val/ test/ (TFRecord shards + schema.json), preprocessing.json,
quarantine.csv (bad rows and why), dataset.json (written last). Exit status 1 with a one-line
message for a bad schema, manifest or empty split, or a file or bucket that cannot be read or
written.
"""


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options and the remaining (Beam) ones."""
    parser = Parser(
        prog="python -m mmkeras.prepare",
        description="Prepare a manifest into sharded TFRecords and training statistics "
                    "(Apache Beam).",
        epilog=EPILOG,
    )
    parser.add_argument("--manifest", required=True, help="CSV, Parquet or JSONL manifest")
    parser.add_argument("--schema", required=True, help="schema YAML "
                        "(see data_pipelines/schemas/example.yaml)")
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--num-shards", type=positive_int, default=4,
                        help="shards per split (default 4); one worker writes each shard, "
                             "streaming its rows' part files, so more shards write in parallel")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the preparation; print the counts and where the report is."""
    args, beam_args = parse_args(argv)  # first: --help needs neither Beam nor TensorFlow
    # Beam warns at import that its optional Google Cloud clients are missing: irrelevant here
    logging.getLogger().addFilter(lambda record: "apitools" not in record.getMessage())
    startup: list[str] = []
    with native_stderr(startup):  # TensorFlow's C++ start-up lines, shown only if not chatter
        from mmkeras.data.beam_prepare import LOCAL_OPTIONS, prepare
    if kept := drop_chatter(startup):
        print("\n".join(kept), file=sys.stderr)

    if not any(a.startswith("--runner") for a in beam_args):
        beam_args = [*LOCAL_OPTIONS, *beam_args]
    try:
        card = prepare(args.manifest, args.schema, args.out, beam_args, args.num_shards)
    except (ValueError, OSError) as err:  # DataError is a ValueError; OSError: files, buckets
        print(one_line(err), file=sys.stderr)
        return 1
    counts = card["num_examples"]
    print(f"prepared {args.out}: train/val/test {counts['train']}/{counts['val']}/"
          f"{counts['test']} examples, {card['bad_rows']} bad row(s) "
          f"(see {os.path.join(args.out, 'quarantine.csv')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
