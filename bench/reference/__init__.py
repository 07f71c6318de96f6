"""The reference airbench94 (PyTorch, KellerJordan/cifar10-airbench) run on a CPU, on the same data as
the engine, beside the engine's default: `sitting.sh` runs both in one sitting and `summary` prints
the comparison table. See bench/reference/README.md."""
