import sys

from featcodec.cli import main

sys.exit(main())
