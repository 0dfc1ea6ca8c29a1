from archlint.cli import entry

entry()
