import sys

from hotsauce.cli import main

sys.exit(main())
