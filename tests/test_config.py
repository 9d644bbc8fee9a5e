import pytest

from mmkeras.config import resolve_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("fusion: late\nepochs: 3\ndataset_args: {n_machines: 8}\n")
    cfg = resolve_config(path, ["epochs=5", "modalities=[audio]", "dataset_args.duration_s=12.5"])
    assert (cfg.fusion, cfg.epochs, cfg.modalities) == ("late", 5, ["audio"])
    assert cfg.dataset_args == {"n_machines": 8, "duration_s": 12.5}
    assert resolve_config(None, ["modalities=audio"]).modalities == ["audio"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["fusion=middle"], "fusion"),
        (["epochs=0"], "epochs"),
        (["epoch=3"], "unknown field 'epoch'"),
        (["epochs"], "not key=value"),
        (["modalities=[]"], "modalities"),
    ],
)
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(None, overrides)


def test_unknown_field_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("fusoin: early\n")
    with pytest.raises(ValueError, match="unknown fields"):
        resolve_config(path)
