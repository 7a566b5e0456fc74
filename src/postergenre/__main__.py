"""`python -m postergenre` runs the command-line interface."""

from postergenre.cli import main

raise SystemExit(main())
