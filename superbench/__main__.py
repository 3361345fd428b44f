import sys

from superbench.cli import main

sys.exit(main())
