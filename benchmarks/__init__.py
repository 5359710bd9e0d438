"""Benchmarks of fmnist_lit (outside the package): `python benchmarks/throughput.py --help`."""
