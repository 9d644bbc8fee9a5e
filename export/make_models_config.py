"""Write a TF Serving ``models.config`` (and optionally the batching parameters) for several models.

Examples:
    python export/make_models_config.py --model mmkeras_model=/models/mmkeras_model > models.config
    python export/make_models_config.py \
        --model machine=/models/machine,policy=latest:2,label=stable:3 \
        --model avdigits=/models/avdigits,policy=specific:1,2,label=canary:2 \
        --batching batching_parameters.txt --max-batch-size 64 > models.config
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmkeras.serving.deploy import (
    BATCHING_PARAMETERS,
    ModelEntry,
    batching_parameters,
    models_config,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        metavar="NAME=BASE_PATH[,policy=P][,label=L:V]",
                        help="a served model; policy: latest, latest:N, all, specific:V1,V2 "
                             "(repeat --model for several models)")
    parser.add_argument("--batching", metavar="FILE", help="also write batching parameters here")
    for key, value in BATCHING_PARAMETERS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value,
                            help=f"batching: {key} (default {value})")
    args = parser.parse_args(argv)
    try:
        text = models_config([ModelEntry.parse(m) for m in args.model])
    except ValueError as error:
        parser.error(str(error))
    sys.stdout.write(text)
    if args.batching:
        Path(args.batching).write_text(batching_parameters(
            **{k: getattr(args, k) for k in BATCHING_PARAMETERS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
