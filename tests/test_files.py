import os

import pytest

from monai_embedseg.utils.files import atomic_output


def test_atomic_output_moves_into_place_and_never_replaces_silently(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_output(target) as tmp:
        assert os.path.dirname(tmp) == str(target.parent) and not target.exists()
        open(tmp, "w").write("first")
    assert target.read_text() == "first"
    with pytest.raises(FileExistsError, match="out.txt"):
        with atomic_output(target) as tmp:
            pass
    with atomic_output(target, overwrite=True) as tmp:
        open(tmp, "w").write("second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary files left


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            open(tmp, "w").write("partial")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_a_file_appearing_while_writing_is_not_clobbered(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(FileExistsError):
        with atomic_output(target) as tmp:
            open(tmp, "w").write("mine")
            target.write_text("someone else's")
    assert target.read_text() == "someone else's"


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    from monai_embedseg.utils.files import atomic_output

    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.txt") as tmp:
            with open(tmp, "w") as f:
                f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640  # not mkstemp's private 0o600
