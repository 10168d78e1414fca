"""Whole-file writes: a failed write leaves the old file and no stray partial beside it."""

import pytest

from gpc.runtime.atomic import whole_file, write_text_whole


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "summary.json"
    write_text_whole(path, "old")
    with pytest.raises(RuntimeError):
        with whole_file(path) as partial:
            partial.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    write_text_whole(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_plot_is_written_whole_in_the_format_its_name_says(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    with whole_file(tmp_path / "sweep.png") as partial:
        assert partial.suffix == ".png"
        fig.savefig(partial)
    plt.close(fig)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.png"]
