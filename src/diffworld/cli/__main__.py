"""``python -m diffworld.cli``: the ``diffworld`` command."""

import sys

from diffworld.cli import main

sys.exit(main())
