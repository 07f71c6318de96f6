"""`python -m engine`: the `engine` command (engine/commands.py)."""
from engine.commands import entry

if __name__ == "__main__":
    entry()
