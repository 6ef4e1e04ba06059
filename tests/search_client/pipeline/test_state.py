import pytest

from search_client.pipeline.settings import PipelineSettings
from search_client.pipeline.state import PHASES, RunState


def test_phase_marks_survive_reload_and_reset_clears_later_phases(tmp_path):
    state = RunState(tmp_path / "run")
    state.mark_done("pretrain", {"checkpoint": "a.pt"})
    state.mark_done("search", {"tau": 0.5})
    again = RunState(tmp_path / "run")
    assert again.done("pretrain") and again.result("search") == {"tau": 0.5}
    again.reset("search")
    assert again.summary() == {p: p == "pretrain" for p in PHASES}
    with pytest.raises(FileNotFoundError, match="search"):
        again.result("search")
    with pytest.raises(ValueError, match="unknown phase"):
        again.done("train")


def test_settings_resume_keeps_saved_values_but_takes_new_server(tmp_path):
    first = PipelineSettings(name="r", runs_dir=tmp_path, search_iters=7, server="http://a")
    first.save()
    second = PipelineSettings(name="r", runs_dir=tmp_path, search_iters=99, server="http://b", token="t")
    merged = second.merged_with_saved()
    assert merged.search_iters == 7 and merged.server == "http://b" and merged.token == "t"
    assert "token" not in (tmp_path / "r" / "pipeline.json").read_text()
