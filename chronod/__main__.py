from __future__ import annotations

from chronod.cli import main

main()
