"""`python -m nborch ...` is the `nborch` command."""
import sys

from nborch.cli import main

if __name__ == '__main__':
    sys.exit(main())
