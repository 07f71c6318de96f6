"""`python -m engine.train`: see engine.train.cli."""
from engine.train.cli import main

if __name__ == "__main__":
    main()
