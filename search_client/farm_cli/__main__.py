"""``python -m search_client.farm_cli``: the ``rtseg-farm`` console script."""

import sys

from search_client.farm_cli import main

if __name__ == "__main__":
    sys.exit(main())
