"""How `scripts/evaluate.py --task NAME` and `--task all` find configs: by their `task:` key, not their file names."""

import pytest

from conftest import ROOT, script_cli
from softprompt.config import ConfigError, configs_by_task, load_config
from softprompt.tasks import TASKS


def test_the_shipped_folders_map_every_config_to_its_task_key():
    for folder in ("configs", "configs/smoke", "tests/configs/smoke"):
        found = configs_by_task(ROOT / folder)
        assert found and all(load_config(path).task.name == task for task, path in found.items())
        assert list(found) == [t for t in TASKS if t in found]  # in the registry's order


def test_file_names_do_not_count_and_non_configs_are_passed_over(tmp_path):
    (tmp_path / "a.yaml").write_text("task: tx\n", encoding="utf-8")
    (tmp_path / "zz-question-answering.yaml").write_text("# the qna run\ntask: qna\n", encoding="utf-8")
    (tmp_path / "notes.yaml").write_text("- a list, not a config\n", encoding="utf-8")
    (tmp_path / "broken.yaml").write_text("task: [unclosed\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "sum.yaml").write_text("task: sum\n", encoding="utf-8")  # only the folder's own files
    assert configs_by_task(tmp_path) == {"qna": tmp_path / "zz-question-answering.yaml", "tx": tmp_path / "a.yaml"}


def test_two_configs_for_one_task_are_an_error_naming_both(tmp_path):
    (tmp_path / "one.yaml").write_text("task: sum\n", encoding="utf-8")
    (tmp_path / "two.yaml").write_text("task: sum\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"one.yaml and .*two.yaml are both configs for task 'sum'"):
        configs_by_task(tmp_path)


def test_a_task_without_a_config_there_is_one_line_naming_the_folder(tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text("task: tx\n", encoding="utf-8")
    assert script_cli("evaluate.py")("--task", "qna", "--config-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no config in {tmp_path} has task: qna (tasks there: tx)"]
