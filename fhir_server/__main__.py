"""`python -m fhir_server` is `yilian`."""

import sys

from fhir_server.cli import main

sys.exit(main())
