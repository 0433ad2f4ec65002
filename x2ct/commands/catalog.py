"""``x2ct catalog list|import``: the models that can be run by id, and adding one."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("catalog", help="list runnable models or import a model folder")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="built-in, shipped and user models with what they need")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    adding = actions.add_parser("import", help="copy a model folder (model.json + model.safetensors) into the "
                                               "user models folder after checking its sha256")
    adding.add_argument("folder", help="model folder")
    adding.add_argument("--id", default=None, help="id to give it (default: the folder name)")
    adding.add_argument("--overwrite", action="store_true", help="replace a user model with the same id")
    published = actions.add_parser("import-published", help="import a paper's released weights (read without "
                                                            "unpickling code) as a user model")
    published.add_argument("method", choices=["x2ct-gan"], help="whose weights: x2ct-gan (kylekma/X2CT)")
    published.add_argument("file", help="the authors' checkpoint (90_net_G.pth two-view, 30_net_G.pth one-view)")
    published.add_argument("--views", type=int, choices=[1, 2], default=None,
                           help="views of that generator (default: read from the file's keys)")
    published.add_argument("--id", default=None, help="id to give it (default: x2ct-gan-lidc-<views>v)")
    published.add_argument("--overwrite", action="store_true", help="replace a user model with the same id")
    parser.set_defaults(func=run)


def run(args) -> int:
    from x2ct import catalog

    if args.action == "import":
        entry = catalog.import_model(args.folder, args.id, args.overwrite)
        print(f"imported {entry.id} into {entry.folder}")
        return 0
    if args.action == "import-published":
        from x2ct.published import import_published

        entry = import_published(args.file, args.views, args.id, args.overwrite)
        print(f"imported {entry.id} into {entry.folder} ({entry.licence.split('. ')[0]}; {entry.intended_use})")
        return 0
    records = [entry.as_dict() for entry in catalog.entries()]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"user models folder: {catalog.user_folder()} (${catalog.MODELS_ENV} overrides it)")
    for record in records:
        if record["problem"]:
            print(f"{record['id']} [{record['source']}, broken]: {record['problem']}")
            continue
        print(f"{record['id']} [{record['source']}]: {record['description']}")
        print(f"    views: {', '.join(record['views_required'])}; training data: {record['training_data']}; "
              f"licence: {record['licence']}; use: {record['intended_use']}")
        if record["metrics"]:
            print(f"    metrics: {json.dumps(record['metrics'])}")
    return 0
