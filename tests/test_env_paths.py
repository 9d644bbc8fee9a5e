"""Folder variables: resolved to absolute paths once; a set variable naming nothing is an error."""

import os
import subprocess
import sys

import pytest

from data_pipelines import avdigits
from mmkeras.data.download import cache_root, local_data
from mmkeras.paths import EnvPathError
from mmkeras.train import main

SCRIPT = """
import os, sys
import mmkeras
from mmkeras.data.download import cache_root, local_data
os.chdir(sys.argv[1])  # a relative path would now point elsewhere
print(os.environ["MMKERAS_DATA_DIR"])
print(os.environ["MMKERAS_CACHE"])
print(local_data("fsdd"))
print(cache_root())
"""


def test_relative_folders_are_resolved_once_at_import(data_dir, tmp_path):
    (tmp_path / "start").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "start" / "data").symlink_to(data_dir)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "elsewhere")], capture_output=True,
        text=True, cwd=tmp_path / "start", timeout=120, check=False,
        env={**os.environ, "MMKERAS_DATA_DIR": "data", "MMKERAS_CACHE": "cache",
             "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data, cache, fsdd, root = proc.stdout.split()
    assert data == str(tmp_path / "start" / "data")
    assert cache == root == str(tmp_path / "start" / "cache")
    assert fsdd == str(tmp_path / "start" / "data" / "fsdd")
    assert (tmp_path / "start" / "cache").is_dir()


def test_missing_data_dir_is_an_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("MMKERAS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(EnvPathError, match=r"MMKERAS_DATA_DIR=.*nowhere.* is not a folder"):
        avdigits.data_folders()
    assert not (tmp_path / "cache" / "fsdd").exists()


def test_data_dir_without_the_dataset_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("MMKERAS_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(EnvPathError, match=r"MMKERAS_DATA_DIR=.*data has no fsdd/ folder"):
        local_data("fsdd")


def test_cache_is_created_and_a_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_CACHE", str(tmp_path / "new" / "cache"))
    assert cache_root() == tmp_path / "new" / "cache" and cache_root().is_dir()
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("MMKERAS_CACHE", str(tmp_path / "file"))
    with pytest.raises(EnvPathError, match=r"MMKERAS_CACHE=.*file.* cannot be used as a folder"):
        cache_root()


def test_cli_names_the_variable_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMKERAS_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["epochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MMKERAS_DATA_DIR=") and "nowhere" in err[0]
