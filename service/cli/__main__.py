"""`python -m service.cli`: the same as the `song-detection` command."""

import sys

from service.cli import main

sys.exit(main())
