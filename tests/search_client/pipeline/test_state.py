import pytest

from search_client.pipeline.settings import PinnedSettings, PipelineSettings
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


def test_rerun_applies_changes_until_the_phase_that_uses_them_has_started(tmp_path):
    first = PipelineSettings(name="r", runs_dir=tmp_path, search_iters=7, server="http://a")
    first.save()
    second = PipelineSettings(name="r", runs_dir=tmp_path, search_iters=99, server="http://b", token="t")
    merged = second.merged_with_saved()  # nothing started yet: every change applies
    assert merged.search_iters == 99 and merged.server == "http://b" and merged.token == "t"
    assert "token" not in (tmp_path / "r" / "pipeline.json").read_text()

    state = RunState(tmp_path / "r")
    state.phase_dir("search")  # an empty folder: the phase failed before any work, it has not started
    assert not state.started("search") and second.merged_with_saved().search_iters == 99
    (state.phase_dir("search") / "metrics.jsonl").write_text("{}\n")
    assert state.started("search")
    with pytest.raises(PinnedSettings, match=r"--search-iters 7 -> 99, but phase 'search' already started") as err:
        second.merged_with_saved()
    assert [c.field for c in err.value.pinned] == ["search_iters"]
    assert second.merged_with_saved(restart_from="search").search_iters == 99
    with pytest.raises(PinnedSettings):
        second.merged_with_saved(restart_from="derive")  # a later restart does not free search's settings
    state.restart_from("search")
    assert not (tmp_path / "r" / "search").exists() and second.merged_with_saved().search_iters == 99


def test_run_config_overrides_are_pinned_leaf_by_leaf(tmp_path):
    saved = PipelineSettings(name="r", runs_dir=tmp_path, overrides={"train": {"lr": 0.01}, "search": {"arch_lr": 1e-3}})
    saved.save()
    state = RunState(tmp_path / "r")
    state.mark_done("pretrain", {})
    later = saved.model_copy(update={"overrides": {"train": {"lr": 0.01}, "search": {"arch_lr": 3e-3, "finetune_iterations": 5}}})
    changes = {c.field: c.phase for c in later.changes_from(saved)}
    assert changes == {"search.arch_lr": "search", "search.finetune_iterations": "finetune"}
    assert later.merged_with_saved().overrides["search"]["arch_lr"] == 3e-3  # search has not started
    lr = saved.model_copy(update={"overrides": {"train": {"lr": 0.05}, "search": {"arch_lr": 1e-3}}})
    with pytest.raises(PinnedSettings, match=r"--set train.lr 0.01 -> 0.05, but phase 'pretrain' already started"):
        lr.merged_with_saved()


def test_a_second_demo_run_reuses_every_finished_phase(tmp_path):
    from search_client.pipeline.demo import DEFAULT, Progress, _restart_if_changed, demo_settings

    def settings(port: int) -> PipelineSettings:  # each demo run starts its farm on a new port and token
        return demo_settings(DEFAULT, tmp_path / "demo").model_copy(
            update={"device_class": "host/x", "server": f"http://127.0.0.1:{port}", "token": f"t{port}"})

    first = settings(8001)
    first.save()
    state = RunState(first.run_dir)
    for phase in PHASES:
        (state.phase_dir(phase) / "out.json").write_text("{}")
        state.mark_done(phase, {})
    again = settings(8002)
    _restart_if_changed(again, Progress())
    merged = again.merged_with_saved()
    assert state.summary() == {p: True for p in PHASES}  # nothing restarted
    assert merged.server == "http://127.0.0.1:8002" and merged.changed_fields(first) == set()
