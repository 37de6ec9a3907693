"""``python -m ctfp``: the command line."""

from ctfp.imageclef.cli import main

raise SystemExit(main())
