"""``python -m ctfp``: the command line."""

from .cli import main

raise SystemExit(main())
