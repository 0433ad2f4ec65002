"""``python -m x2ct`` and the ``x2ct`` command: a process of x2ct's own, so its start-up is trimmed first."""

import sys


def main() -> int:
    from x2ct.startup import skip_unused_optional_imports

    skip_unused_optional_imports()
    from x2ct.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
