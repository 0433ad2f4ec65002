"""``x2ct sampledata list|fetch|path``: the real sample cases."""

from __future__ import annotations

from x2ct import sampledata


def register(subparsers) -> None:
    parser = subparsers.add_parser("sampledata", help="list, fetch or locate the real sample cases")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the sample cases and whether they are cached")
    for action, text in (("fetch", "download (once), check and cache the case"),
                         ("path", "print the path of the case's main file, fetching it if needed")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("name", choices=sampledata.names())
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.action == "list":
        for name, case in sampledata.CASES.items():
            state = "cached" if sampledata.is_cached(name) else "not fetched"
            print(f"{name:12s} {state:12s} {case.description} [{case.requirement}]")
    elif args.action == "fetch":
        for local_name, file in sampledata.fetch(args.name).items():
            print(file)
    else:
        print(sampledata.path(args.name))
    return 0
