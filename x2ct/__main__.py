import sys

from x2ct.cli import main

sys.exit(main())
