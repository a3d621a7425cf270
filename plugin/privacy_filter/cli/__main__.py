"""``python -m privacy_filter.cli``: the ``privacy-filter`` command."""

import sys

from privacy_filter.cli import main

sys.exit(main())
