"""Train a FER model from a recipe with the transformers Trainer (Accelerate does precision and processes).

python -m fer_hf.train recipes/smoke.yaml
accelerate launch -m fer_hf.train recipes/vit_unfreeze.yaml --training.num_train_epochs 12
"""

# ruff: noqa: E402  (TQDM_DISABLE must be set before tqdm is imported)
from __future__ import annotations

import os

# Progress bars only on the main process: tqdm reads TQDM_DISABLE once, when it is first imported (below).
if int(os.environ.get("LOCAL_RANK", "0")) > 0:
    os.environ.setdefault("TQDM_DISABLE", "1")

import shlex
import sys

from fer_hf.configs import Recipe
from fer_hf.hub.card import write_model_card
from fer_hf.recipe_parser import parse_recipe
from fer_hf.training.run import train_from_recipe
from fer_hf.training.trainer import FerTrainer


def main(argv: list[str] | None = None) -> int:
    """The command: recipe -> trained run folder with its card (train_from_recipe) -> the Hub (training.push_to_hub)."""
    recipe = parse_recipe(argv)
    return finish_run(recipe, train_from_recipe(recipe))


def finish_run(recipe: Recipe, trainer: FerTrainer) -> int:
    """After training, on the main process: the model card in the run folder, then the Hub (training.push_to_hub)."""
    from fer_hf.hub.publish import push_trained_run  # the Hub client only where the command pushes

    if not trainer.is_world_process_zero():
        return 0
    write_model_card(recipe.training.output_dir)  # README.md, written again by fer_hf.hub.publish on upload
    print(next_steps(recipe))
    return push_trained_run(recipe)


def next_steps(recipe: Recipe) -> str:
    """What the command prints last: where the run folder is and what to run with it next, so that a first run
    (the smoke recipe) leads somewhere instead of ending at a table of numbers."""
    run = shlex.quote(str(recipe.training.output_dir))
    source = shlex.quote(str(recipe.data.source))
    lines = [
        f"run folder: {run} (model, model card README.md, metrics.json, confusion matrix, training curves)",
        "next:",
        f"  python -m fer_hf.evaluate {run} --data {source}   # scores, confusion matrix and its most confident mistakes",
        f"  python -m fer_hf.predict --model {run} photo.jpg   # the faces in a photo of yours, with this model",
    ]
    if recipe.data.source == "bundled":  # a sample run: the real one is the next step
        lines.append(
            "  python -m fer_hf.train recipes/cnn.yaml --data.source FER2013_FOLDER   # the full FER2013 "
            "(recipes/README.md lists the others)"
        )
    else:
        lines.append(f"  python -m fer_hf.hub.publish {run} --repo-id USER/NAME   # share it on the Hugging Face Hub")
    return "\n".join(lines)


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))  # a RecipeError/RunLockError names the key or folder and the fix: one line, exit 2
