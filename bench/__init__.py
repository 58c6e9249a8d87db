"""Benchmarks (`make bench`): figures, printed as measured / reference / target."""
