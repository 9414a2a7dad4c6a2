"""``python -m services.trainer``: the trainer process (see entrypoints/consumer.py)."""

import sys

from services.trainer.entrypoints.consumer import main

sys.exit(main())
