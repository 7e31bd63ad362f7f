import sys

from bpcbench.cli import main

sys.exit(main())
