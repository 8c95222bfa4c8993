import sys

from geomlens.cli import main

sys.exit(main())
