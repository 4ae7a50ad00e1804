"""python -m drsvc: the same as the drsvc command."""

from drsvc.cli.main import main

main()
