"""`python -m elit ...` (used by `torchrun -m elit train ...`)."""
from elit.cli import main

raise SystemExit(main())
