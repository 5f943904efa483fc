import sys

from actorhub.dashboard.supervisor import main

sys.exit(main())
