"""The versions layout and its pointer (classifier/versions.py): the contract training,
promote/rollback and the server share."""
from __future__ import annotations

import datetime as dt

import pytest

from classifier.versions import (
    VersionError,
    list_versions,
    live_version,
    move_pointer,
    read_history,
    served_model_path,
    version_dir,
    version_name,
)


def make_version(root, name, complete=True):
    folder = root / "versions" / name
    folder.mkdir(parents=True)
    if complete:
        (folder / "export.pkl").write_bytes(b"model")
    return folder


def test_names_are_readable_and_sort_by_age():
    early = version_name(dt.datetime(2026, 12, 5, 9, 15, tzinfo=dt.UTC), "ab12cd" + "0" * 58)
    late = version_name(dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC), "001122" + "0" * 58)
    assert early == "20261205-091500-ab12cd"
    assert sorted([late, early]) == [early, late]


def test_only_complete_versions_are_listed(tmp_path):
    make_version(tmp_path, "20261205-091500-ab12cd")
    make_version(tmp_path, "20261205-100000-001122", complete=False)  # still being written
    (tmp_path / "versions" / "notes").mkdir()
    assert list_versions(tmp_path) == ["20261205-091500-ab12cd"]


def test_without_a_pointer_model_path_is_served_as_before(tmp_path):
    model = tmp_path / "export.pkl"
    assert live_version(tmp_path) is None
    assert served_model_path(model) == model


def test_moving_the_pointer_serves_that_version_and_logs_the_move(tmp_path):
    first, second = "20261205-091500-ab12cd", "20261205-100000-001122"
    make_version(tmp_path, first), make_version(tmp_path, second)
    move_pointer(tmp_path, first, "promote")
    move_pointer(tmp_path, second, "promote", verdict="better")
    assert served_model_path(tmp_path / "export.pkl") == version_dir(tmp_path, second) / "export.pkl"
    moves = read_history(tmp_path)
    assert [(m["action"], m["version"], m["previous"]) for m in moves] == [
        ("promote", first, None), ("promote", second, first)]
    assert moves[1]["verdict"] == "better"


@pytest.mark.parametrize("name", ["../../etc", "latest", "20261205-091500-ab12cd/.."])
def test_names_that_are_not_versions_are_refused(tmp_path, name):
    with pytest.raises(VersionError):
        move_pointer(tmp_path, name, "promote")


def test_a_pointer_to_a_missing_version_is_refused(tmp_path):
    with pytest.raises(VersionError, match="No complete version"):
        move_pointer(tmp_path, "20261205-091500-ab12cd", "promote")
    assert live_version(tmp_path) is None
