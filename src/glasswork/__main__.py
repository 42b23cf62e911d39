import sys

from glasswork.cli import main

sys.exit(main())
