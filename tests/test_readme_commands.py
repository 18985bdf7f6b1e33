"""Every `python -m fer_hf.<command>` line of the README and recipes/README.md still runs as written: each one's
arguments go through its own command's parser (train: the recipe is read and resolved), stopped before the work
starts, so a renamed module, flag or recipe fails here. The README's video walk-through runs for real."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "recipes" / "README.md"]
# A command in a code block or in backticks: from the interpreter or the launcher to the end, before any comment.
COMMAND = re.compile(r"((?:\.venv/bin/)?(?:python|accelerate launch)\b[^`|#\n]*?-m fer_hf[\w.]*[^`|#\n]*)")
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\b|\[|\.\.\.")  # RUN_DIR, CONFIG.yaml, [--flag value ...]


class Parsed(Exception):
    """Raised where a command would start its work: its arguments were accepted."""


def readme_commands() -> list[tuple[str, str, list[str]]]:
    found = {}
    for doc in DOCS:
        for line in doc.read_text().replace("\\\n", " ").splitlines():  # a command continued with \ is one line
            for match in COMMAND.finditer(line):
                text = match.group(1).strip()
                if PLACEHOLDER.search(text):
                    continue
                words = shlex.split(text)
                if words[-1].startswith("fer_hf"):  # a command named in prose (`python -m fer_hf.calibrate` set ...)
                    continue
                module = words[words.index("-m") + 1]
                found[text] = (module, words[words.index("-m") + 2 :], words[: words.index("-m")])
    return [(text, *value) for text, value in sorted(found.items())]


COMMANDS = readme_commands()


def test_the_readmes_name_the_commands_users_run():
    modules = {module for _, module, _, _ in COMMANDS}
    assert {"fer_hf.train", "fer_hf.evaluate", "fer_hf.predict", "fer_hf.export", "fer_hf.runtime"} <= modules
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("text", "module", "argv", "launcher"), COMMANDS, ids=[c[0][:80] for c in COMMANDS])
def test_readme_command_parses_as_written(text, module, argv, launcher, monkeypatch):
    monkeypatch.chdir(REPO)  # the commands are written from the repository root (../shared beside it)
    if "--config_file" in launcher:
        assert (REPO / launcher[launcher.index("--config_file") + 1]).is_file(), text
    real = argparse.ArgumentParser.parse_known_args

    def parse_and_stop(self, args=None, namespace=None):
        dispatch = self.prog == "python -m fer_hf.bench" or (
            self.prog.startswith("python -m fer_hf.bench ") and not self.add_help
        )
        if dispatch:  # bench's dispatcher and its name stubs: the benchmark's own parser reads the rest
            return real(self, args, namespace)
        namespace, rest = real(self, args, namespace)
        if rest and module != "fer_hf.cv":  # cv passes the rest to the recipe; every other command refuses it
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        raise Parsed(namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_and_stop)
    entry = {"fer_hf.data": "fer_hf.data.summary", "fer_hf.bench": "fer_hf.bench.__main__"}
    command = importlib.import_module(entry.get(module, module))
    if module == "fer_hf.train":
        import torch

        from fer_hf.recipe_parser import parse_recipe

        if argv == ["--help"]:
            with pytest.raises(SystemExit) as stop:
                parse_recipe(argv)
            assert stop.value.code == 0
            return
        recipe = REPO / argv[0]
        gpu_only = "bf16: true" in recipe.read_text() and "use_cpu: true" not in recipe.read_text()
        if gpu_only and not torch.cuda.is_available():  # written for a GPU: read here as the CPU would run it
            argv = [*argv, "--use_cpu"]
        parse_recipe(argv)
        return
    if module == "fer_hf.runtime":  # its own argument reading: [MODEL] PHOTO...
        model, photos = command.split_model_arg(argv)
        assert photos and model, text
        return
    with pytest.raises(Parsed):
        command.main(argv)


def test_the_readmes_video_walk_through_runs(tmp_path):
    """The clip is made, then predicted with every output it names; each file is there and complete."""
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if "six.avi" in line]
    assert len(lines) == 2, lines
    for line in lines:
        words = shlex.split(line.split("  #")[0])
        done = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    assert (out / "six.csv").stat().st_size > 0 and (out / "six.mp4").stat().st_size > 0
    assert any(p.suffix == ".png" for p in out.iterdir())  # --thumbnails: a crop per track
