"""``x2ct models list [--json]``: the registered reconstruction models and their presets."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the reconstruction models")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every model with its presets, views and parameter counts")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def describe() -> list[dict]:
    """One record per model: spec of each preset (built on the meta device: no memory, no time)."""
    import torch

    from x2ct.models import build, count_parameters, entry, names

    records = []
    for name in names():
        item = entry(name)
        presets = {}
        for preset in item.presets:
            with torch.device("meta"):
                model = build(name, preset)
            spec = model.spec
            presets[preset] = {"parameters": count_parameters(model), "view_counts": list(spec.view_counts),
                               "view_size": spec.view_size, "volume_size": spec.volume_size,
                               "protocol": spec.protocol}
        records.append({"name": name, "summary": item.summary, "paper": item.paper,
                        "adversarial": item.critic is not None, "presets": presets})
    return records


def run(args) -> int:
    records = describe()
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for record in records:
        print(f"{record['name']}: {record['summary']}  [{record['paper']}]")
        for preset, info in record["presets"].items():
            views = "/".join(map(str, info["view_counts"]))
            print(f"    {preset:5s} {info['parameters'] / 1e6:7.2f}M params, views {views} of "
                  f"{info['view_size']}^2 -> {info['volume_size']}^3, protocol {info['protocol']}")
    return 0
