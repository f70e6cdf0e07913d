import sys

from featherface.cli import main

sys.exit(main())
