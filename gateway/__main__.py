"""`python -m gateway` is the same program as `library-gateway`."""

import sys

from gateway.cli.main import main

sys.exit(main())
