"""`python -m cnnlab` is the `cnnlab` command."""

import sys

from cnnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
