"""`python -m service.cli`: the same as `tuneserve`."""

from service.cli import main

raise SystemExit(main())
