"""`python -m worker ...` = `dinf-worker ...`."""

from worker.cli import main

main()
