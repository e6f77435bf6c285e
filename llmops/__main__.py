import sys

from llmops.cli import main

sys.exit(main())
