"""``mnistkit models``: the registered architectures and the bundled pretrained model with its card."""

from __future__ import annotations

import click

from mnistkit.cli.options import print_json_line


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {architectures, bundled} instead of text.")
def models(as_json):
    """List the model architectures `mnistkit train --model` accepts, and the pretrained digit model
    that `mnistkit predict` uses when no checkpoint is given, with its model card."""
    from mnistkit.bundled import bundled_model_path
    from mnistkit.card import model_card
    from mnistkit.errors import CheckpointError
    from mnistkit.models import get_model_spec, list_models

    specs = [get_model_spec(name) for name in list_models()]
    architectures = [
        {"name": s.name, "task": s.task, "description": s.description, "options": s.defaults} for s in specs
    ]
    try:
        path = bundled_model_path()
        bundled = {"path": str(path), "bytes": path.stat().st_size, "card": model_card(path)}
    except CheckpointError as exc:  # an install without the file: say so, list the rest
        bundled = {"path": None, "error": str(exc)}
    if as_json:
        print_json_line({"architectures": architectures, "bundled": bundled})
        return 0
    click.echo("Architectures (mnistkit train --model NAME; options via --model-option KEY=VALUE):")
    width = max(len(a["name"]) for a in architectures)
    for a in architectures:
        click.echo(f"  {a['name']:<{width}}  {a['task']:<10}  {a['description']}")
    click.echo("")
    if bundled.get("path") is None:
        click.echo(f"Bundled pretrained model: none ({bundled['error']})")
        return 0
    click.echo("Bundled pretrained model (used by `mnistkit predict IMAGE...` with no checkpoint):")
    click.echo(f"  file: {bundled['path']} ({bundled['bytes'] / 1024:.0f} KiB)")
    for line in card_lines(bundled["card"]):
        click.echo(f"  {line}")
    return 0


def card_lines(card: dict) -> list[str]:
    """A model card as short ``key: value`` lines for the terminal (``predict --about`` shows the same)."""

    def pct(v):
        return f"{v:.2f} %" if isinstance(v, (int, float)) else "not measured"

    lines = [
        f"name: {card.get('name')}  ({card.get('architecture')} {card.get('model_options')}, "
        f"{card.get('parameters'):,} parameters)"
        if card.get("parameters") is not None
        else f"name: {card.get('name')}  ({card.get('architecture')})"
    ]
    if card.get("command"):
        lines.append(f"trained with: {card['command']}  (seed {card.get('seed')})")
    data = card.get("data") or {}
    if data:
        lines.append(f"data: {data.get('dataset')}: {data.get('train')}")
    dataset = data.get("dataset") or "MNIST"
    lines.append(
        f"{dataset} test accuracy: {pct(card.get('test_accuracy'))}; validation: {pct(card.get('val_accuracy'))}"
    )
    t = card.get("temperature")
    ece = card.get("ece") or {}
    if t is not None:
        order = sorted(ece, key=lambda split: (split != "val", split))  # validation (fitted on) first
        parts = [
            f"{split} {ece[split]['before']:.2f} % -> {ece[split]['after']:.2f} %"
            for split in order
            if ece[split].get("after") is not None
        ]
        lines.append(f"calibration: temperature {t:.3f}; ECE ({card.get('ece_bins')} bins) {', '.join(parts)}")
    unsure = card.get("unsure") or {}
    if unsure.get("min_confidence") is not None:
        how = f" ({unsure['chosen']})" if unsure.get("chosen") else ""
        novelty = "; and a novelty model" if unsure.get("novelty_model") else ""
        lines.append(f"unsure below: top probability {unsure['min_confidence']:g}{how}{novelty}")
    photo = card.get("photo_benchmark") or {}
    if photo.get("accuracy") is None:
        lines.append(f"photo benchmark: {photo.get('note') or 'not measured'}")
    else:
        lines.append(
            f"photo benchmark (bench/photos.py, {photo.get('accuracy_is', 'accuracy')}): {pct(photo['accuracy'])}"
        )
    lines += [f"note: {n}" for n in card.get("notes") or []]
    return lines
