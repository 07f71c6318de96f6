"""`python -m engine.export`: see engine.export.cli."""
from engine.export.cli import main

if __name__ == "__main__":
    main()
