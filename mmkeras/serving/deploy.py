"""TF Serving deployment files: ``models.config`` for several models, batching parameters.

``models.config`` is built as TF Serving's own ``ModelServerConfig`` proto (from
tensorflow-serving-api) and written in text format, so what is written is what TF Serving parses.

Example:
    >>> print(models_config([ModelEntry("machine", "/models/machine", "latest:2",
    ...                                 {"stable": 1})]).strip())
    model_config_list {
      config {
        name: "machine"
        base_path: "/models/machine"
        model_platform: "tensorflow"
        model_version_policy {
          latest {
            num_versions: 2
          }
        }
        version_labels {
          key: "stable"
          value: 1
        }
      }
    }
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

BATCHING_PARAMETERS = {
    "max_batch_size": 64,
    "batch_timeout_micros": 2000,
    "num_batch_threads": 4,
    "max_enqueued_batches": 100,
}


@dataclass
class ModelEntry:
    """One served model: name, base path (as the server sees it), version policy, labels.

    ``policy``: ``latest`` (newest only), ``latest:N``, ``all`` or ``specific:1,3``.
    """

    name: str
    base_path: str
    policy: str = "latest"
    labels: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ModelEntry:
        """``NAME=BASE_PATH[,policy=P][,label=L:V]...``, as the command line takes it.

        Example:
            >>> ModelEntry.parse("m=/models/m,policy=specific:1,2,label=stable:1").policy
            'specific:1,2'
        """
        name, _, rest = text.partition("=")
        parts = rest.split(",")
        if not name or not parts[0]:
            raise ValueError(f"model {text!r}: expected NAME=BASE_PATH[,policy=...][,label=L:V]")
        entry = cls(name, parts[0])
        key = None
        for part in parts[1:]:
            if part.startswith("policy="):
                entry.policy, key = part[len("policy="):], "policy"
            elif part.startswith("label="):
                label, _, version = part[len("label="):].partition(":")
                if not version.isdigit():
                    raise ValueError(f"model {name}: label {part!r} must be label=NAME:VERSION")
                entry.labels[label], key = int(version), None
            elif key == "policy" and part.isdigit():
                entry.policy += f",{part}"
            else:
                raise ValueError(f"model {name}: cannot read {part!r}")
        return entry


def _policy(entry: ModelEntry, config: model_server_config_pb2.ModelConfig) -> None:
    kind, _, arg = entry.policy.partition(":")
    policy = config.model_version_policy
    if kind == "latest":
        policy.latest.num_versions = int(arg or 1)
    elif kind == "all":
        policy.all.SetInParent()
    elif kind == "specific" and arg:
        policy.specific.versions.extend(int(v) for v in arg.split(","))
    else:
        raise ValueError(f"model {entry.name}: version policy {entry.policy!r} is not latest, "
                         "latest:N, all or specific:V1,V2")
    served = set(policy.specific.versions)
    if kind == "specific" and not set(entry.labels.values()) <= served:
        raise ValueError(f"model {entry.name}: labels {entry.labels} point at versions the "
                         f"policy does not serve ({sorted(served)})")


def models_config(entries: list[ModelEntry]) -> str:
    """TF Serving ``--model_config_file`` text for ``entries``."""
    if not entries:
        raise ValueError("models_config needs at least one model")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    server = model_server_config_pb2.ModelServerConfig()
    for entry in entries:
        config = server.model_config_list.config.add(
            name=entry.name, base_path=entry.base_path, model_platform="tensorflow")
        _policy(entry, config)
        for label, version in entry.labels.items():
            config.version_labels[label] = version
    return text_format.MessageToString(server)


def batching_parameters(**overrides: int) -> str:
    """TF Serving ``--batching_parameters_file`` text (``BatchingParameters``).

    Example:
        >>> batching_parameters(max_batch_size=32).splitlines()[0]
        'max_batch_size { value: 32 }'
    """
    unknown = set(overrides) - set(BATCHING_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown batching parameters {sorted(unknown)}; "
                         f"known: {sorted(BATCHING_PARAMETERS)}")
    values = {**BATCHING_PARAMETERS, **overrides}
    return "".join(f"{k} {{ value: {int(v)} }}\n" for k, v in values.items())
