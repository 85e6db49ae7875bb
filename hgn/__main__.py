import sys

from hgn.cli import main

sys.exit(main())
